"""One `dsbs train` per MODEL_DIR: a second job exits 2 at once, changes nothing, and the first ends
as a solo run does (two jobs used to both run and exit 0, every step twice in metrics.jsonl).

The first job is frozen with SIGSTOP while the second runs, so "changes nothing" is checked on a
still tree; the kernel's flock stays with the stopped process, as it would with a busy one.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import gin

from dsbs_jax.train import cli
from test_cli_faults import assert_one_error_line, tree_hashes
from test_train_interrupt import assert_same_params
from test_train_preemption import PERIOD, STEPS, _argv, _complete_steps, _env, letters  # noqa: F401 (fixture)


def _metric_steps(model_dir: pathlib.Path) -> list:
    return [(row["step"], round(row["loss"], 6)) for row in map(json.loads, (model_dir / "metrics.jsonl").open())
            if "loss" in row]


def test_second_training_in_one_model_dir_exits_2_and_the_first_equals_a_solo_run(letters, tmp_path):
    gin.clear_config()
    assert cli.train_main(_argv(tmp_path / "solo")) == 0
    gin.clear_config()

    shared = tmp_path / "shared"
    cmd = [sys.executable, "-m", "dsbs_jax.cli", "train", *_argv(shared)]
    first = subprocess.Popen(cmd, env=_env(letters), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while PERIOD not in _complete_steps(shared) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first job ended before its first checkpoint"
        first.send_signal(signal.SIGSTOP)  # a still tree while the second job runs
        time.sleep(0.5)
        before = tree_hashes(shared)
        second = subprocess.run(cmd, env=_env(letters), capture_output=True, text=True, timeout=300)
        after = tree_hashes(shared)
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=400)

    assert second.returncode == 2, second.stderr[-3000:]
    assert_one_error_line(second, "dsbs train", f"{shared} is in use by another `dsbs train`",
                          f"pid {first.pid} on host {socket.gethostname()}", "--gin.MODEL_DIR")
    assert after == before, "the refused job changed MODEL_DIR"
    assert first.returncode == 0, stderr[-3000:]

    assert _metric_steps(shared) == _metric_steps(tmp_path / "solo")  # every step once, the same losses
    assert len(list(shared.glob("events.out.tfevents.*"))) == 1
    assert _complete_steps(shared)[-1] == STEPS
    assert_same_params(tmp_path / "solo", shared)


def test_a_finished_run_releases_model_dir(letters, tmp_path):
    """The lock lives as long as the job: a finished run's MODEL_DIR trains again (resumes) at once."""
    gin.clear_config()
    model_dir = tmp_path / "run"
    assert cli.train_main(_argv(model_dir)) == 0
    holder = json.loads((model_dir / "train.lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    gin.clear_config()
    assert cli.train_main(_argv(model_dir)) == 0  # nothing left to train: evaluates only, not refused
    gin.clear_config()  # unlocked again, for modules that register configurables when later tests import them
