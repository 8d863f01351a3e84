"""SIGKILL the rationale job mid-run (twice), restart it, and get exactly one record per id."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from teacher_server import FaultPlan, ServerThread  # noqa: E402

from dsbs_jax.data import tfrecords  # noqa: E402

N = 60


def _command(url, release_dir, out):
    return [sys.executable, "-m", "dsbs_jax.cli", "rationales", "--dataset", "cqa", "--split", "test", "--src",
            str(release_dir), "--out", str(out), "--base_url", url, "--model", "toy", "--limit", str(N),
            "--concurrency", "2", "--no_progress"]


def _committed(out: pathlib.Path) -> int:
    log = out / "cqa" / "_work" / "test.shard-00000-of-00001" / "progress.jsonl"
    return log.read_bytes().count(b"\n") if log.exists() else 0


def _kill_after(command, out, at_least: int) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _committed(out) < at_least and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkill_and_resume_gives_exactly_one_record_per_id(release_dir, tmp_path):
    with ServerThread(FaultPlan(delay_s=0.03)) as server:
        reference = tmp_path / "reference"
        subprocess.run(_command(server.url, release_dir, reference), check=True, capture_output=True)
        resumed = tmp_path / "resumed"
        _kill_after(_command(server.url, release_dir, resumed), resumed, 10)
        first = _committed(resumed)
        assert 10 <= first < N and not (resumed / "cqa" / "manifest.json").exists()
        _kill_after(_command(server.url, release_dir, resumed), resumed, first + 15)
        second = _committed(resumed)
        assert first < second < N
        requests_before_final = len(server.plan.seen)
        subprocess.run(_command(server.url, release_dir, resumed), check=True, capture_output=True)
        # The final run asked only for what was not committed (each committed id is never re-asked).
        assert len(server.plan.seen) - requests_before_final == N - second
        paid = len(server.plan.seen) - N  # everything the three segments sent (the reference sent N)

    # The manifest counts every segment, not only the last one: the killed runs' requests up to
    # their last committed output (a request in flight at the kill is paid but not counted).
    entry = tfrecords.read_manifest(str(resumed / "cqa"))["splits"]["test"]
    assert entry["segments"] == 3
    assert N <= entry["requests"] <= paid and entry["requests"] >= paid - 2 * 2  # concurrency 2, two kills
    work = resumed / "cqa" / "_work" / "test.shard-00000-of-00001"
    segments = [json.loads(line) for line in (work / "segments.jsonl").read_text().splitlines()]
    assert [s["segment"] for s in segments] == [3]  # only the last run ended by itself
    assert entry["wall_time_s"] > segments[0]["wall_time_s"]

    got = list(tfrecords.read_split(str(resumed / "cqa"), "test", verify=True))
    want = {e.id: e for e in tfrecords.read_split(str(reference / "cqa"), "test")}
    assert len(got) == N and len({e.id for e in got}) == N
    assert {e.id: (e.teacher_label, e.rationales) for e in got} == {
        i: (e.teacher_label, e.rationales) for i, e in want.items()}
