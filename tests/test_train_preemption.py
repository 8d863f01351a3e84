"""Preemption: `dsbs train` SIGKILLed after a checkpoint and restarted ends bit-identical to an uninterrupted run.

Exercises the data-iterator position (skip-n on the seeded SeqIO dataset), dropout RNG by step,
optimizer state restore, and orbax's refusal to take a half-written checkpoint for complete.
"""
import pathlib
import signal
import subprocess
import sys
import time

import gin
import jax
import numpy as np
import pytest

import synthetic_letters
from dsbs_jax.train import cli, inference

STEPS, PERIOD, KILL_AFTER = 80, 10, 20


@pytest.fixture(scope="module")
def letters(letters_root):
    root, spm = letters_root
    synthetic_letters.prepare(root, spm)
    return root, spm


def _argv(model_dir):
    return ["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin",
            "--gin.MIXTURE_OR_TASK_MODULE=tasks", "--gin.MIXTURE_OR_TASK_NAME=letters_dsbs_gold",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 24}", f"--gin.TRAIN_STEPS={STEPS}",
            f"--gin.MODEL_DIR={model_dir}", "--gin.BATCH_SIZE=16", "--gin.VOCAB_SIZE=128",
            "--gin.DROPOUT_RATE=0.1", f"--gin.CHECKPOINT_PERIOD={PERIOD}", "--gin.EVAL_PERIOD=-1"]


def _env(letters):
    # What a user does: `import tasks` registers every dataset under $DSBS_DATA_ROOT.
    return synthetic_letters.dsbs_env(*letters)


def _complete_steps(model_dir):
    ckpts = pathlib.Path(model_dir) / "checkpoints"
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


@pytest.fixture(scope="module")
def reference(letters, tmp_path_factory):
    """The uninterrupted run, in-process through the same CLI and gin flags (both tests compare to it)."""
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "ref"
    gin.clear_config()
    assert cli.train_main(_argv(model_dir)) == 0
    gin.clear_config()  # unlocked again, for modules that register configurables when later tests import them
    return model_dir


def test_killed_and_restarted_run_matches_uninterrupted(letters, reference, tmp_path):
    # Run, SIGKILL as soon as checkpoint KILL_AFTER is complete (the process is mid-run then).
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dsbs_jax.cli", "train", *_argv(killed)]
    proc = subprocess.Popen(cmd, env=_env(letters), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while KILL_AFTER not in _complete_steps(killed) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate()[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    done = _complete_steps(killed)
    assert KILL_AFTER in done and max(done) < STEPS, f"run was not interrupted mid-way: {done}"

    # Restart: resumes from the newest complete checkpoint and finishes.
    restarted = subprocess.run(cmd, env=_env(letters), capture_output=True, text=True, timeout=400)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert f"Resumed from {killed / 'checkpoints'} step {max(done)}" in restarted.stderr

    ref_params, _, ref_record = inference.load_for_inference(str(reference))
    params, _, record = inference.load_for_inference(str(killed))
    assert ref_record["step"] == record["step"] == STEPS
    ref_leaves, leaves = jax.tree.leaves(ref_params), jax.tree.leaves(params)
    assert len(ref_leaves) == len(leaves) > 20
    for a, b in zip(ref_leaves, leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Training moved the params: identity is not trivially true.
    initial = inference.load_for_inference(str(killed), step=PERIOD)[0]
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(initial), leaves))


def _final_save_started(model_dir) -> bool:
    ckpts = pathlib.Path(model_dir) / "checkpoints"
    return ckpts.is_dir() and any(p.name.startswith(f"{STEPS}.") for p in ckpts.iterdir())


def test_killed_during_the_final_save_resumes_bit_identical(letters, reference, tmp_path):
    """SIGKILL while the last checkpoint is being written (before the final eval), then resume."""
    ref_leaves = jax.tree.leaves(inference.load_for_inference(str(reference))[0])
    for attempt in range(3):  # the write takes milliseconds: retry if the kill came after it
        killed = tmp_path / f"killed{attempt}"
        cmd = [sys.executable, "-m", "dsbs_jax.cli", "train", *_argv(killed)]
        proc = subprocess.Popen(cmd, env=_env(letters), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not _final_save_started(killed) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if STEPS not in _complete_steps(killed):
            break
    assert STEPS not in _complete_steps(killed), "the final checkpoint was always complete before the kill"
    assert max(_complete_steps(killed)) == STEPS - PERIOD
    restarted = subprocess.run(cmd, env=_env(letters), capture_output=True, text=True, timeout=400)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert f"step {STEPS - PERIOD}" in restarted.stderr
    leaves = jax.tree.leaves(inference.load_for_inference(str(killed))[0])
    assert len(leaves) == len(ref_leaves) > 20
    for a, b in zip(ref_leaves, leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
