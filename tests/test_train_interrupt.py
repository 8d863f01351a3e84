"""Ctrl-C (SIGINT) and SIGTERM stop `dsbs train` with one line and no traceback, and the same command
resumes bit-identical to an uninterrupted run (it used to print a 37-49 line KeyboardInterrupt
traceback from TensorFlow or orbax, with no word about resuming)."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import gin
import jax
import numpy as np

from dsbs_jax.train import cli, inference
from test_train_preemption import STEPS, _argv, _complete_steps, _env, letters  # noqa: F401 (fixture)

LINE = re.compile(r"^dsbs train: interrupted at step (\d+) \((SIGINT|SIGTERM)\); the same command resumes from "
                  r"step (\d+)$")


def assert_same_params(reference_dir, model_dir) -> None:
    """The newest checkpoints of two runs hold bit-identical parameters (and more than a few of them)."""
    want, got = (jax.tree.leaves(inference.load_for_inference(str(d))[0]) for d in (reference_dir, model_dir))
    assert len(want) == len(got) > 20
    for a, b in zip(want, got):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _interrupt_after(cmd, env, model_dir, checkpoint: int, signum: int) -> subprocess.CompletedProcess:
    """Runs `cmd`, sends `signum` once `checkpoint` is complete; returns the finished process."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while checkpoint not in _complete_steps(model_dir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before checkpoint {checkpoint}: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _assert_one_line(result: subprocess.CompletedProcess, signum: int, at_least: int, model_dir) -> int:
    """The single `interrupted` line, last on stderr; returns the step it says the command resumes from."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    lines = [line for line in result.stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and lines[0] == result.stderr.strip().splitlines()[-1], result.stderr[-3000:]
    match = LINE.match(lines[0])
    assert match and match.group(2) == signal.Signals(signum).name, lines[0]
    step, resume = int(match.group(1)), int(match.group(3))
    assert at_least <= resume <= step < STEPS
    assert resume == max(_complete_steps(model_dir)), (resume, lines[0])
    return resume


def test_sigint_then_sigterm_each_one_line_and_the_resumed_run_is_bit_identical(letters, tmp_path):
    gin.clear_config()
    assert cli.train_main(_argv(tmp_path / "ref")) == 0
    gin.clear_config()  # unlocked again, for modules that register configurables when later tests import them

    model_dir = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "dsbs_jax.cli", "train", *_argv(model_dir)]
    env = _env(letters)
    first = _interrupt_after(cmd, env, model_dir, 20, signal.SIGINT)
    assert first.returncode == 130, first.stderr[-3000:]  # 128 + SIGINT, as a shell reports Ctrl-C
    resume = _assert_one_line(first, signal.SIGINT, 20, model_dir)

    second = _interrupt_after(cmd, env, model_dir, resume + 20, signal.SIGTERM)
    assert second.returncode == 143, second.stderr[-3000:]  # 128 + SIGTERM
    assert f"Resumed from {model_dir / 'checkpoints'} step {resume}" in second.stderr
    resume = _assert_one_line(second, signal.SIGTERM, resume + 20, model_dir)

    last = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert last.returncode == 0 and f"Resumed from {model_dir / 'checkpoints'} step {resume}" in last.stderr, (
        last.stderr[-3000:])
    assert_same_params(tmp_path / "ref", model_dir)
