"""SIGKILL the rationale job mid-run (twice), restart it, and get exactly one record per id."""
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

    got = list(tfrecords.read_split(str(resumed / "cqa"), "test", verify=True))
    want = {e.id: e for e in tfrecords.read_split(str(reference / "cqa"), "test")}
    assert len(got) == N and len({e.id for e in got}) == N
    assert {e.id: (e.teacher_label, e.rationales) for e in got} == {
        i: (e.teacher_label, e.rationales) for i, e in want.items()}
