"""Orbax checkpoints of the train state: round trip, unfinished writes, disk full, damaged files."""
import os
import pathlib
import shutil
import subprocess

import jax
import numpy as np
import pytest

from dsbs_jax.models import network, partitioning
from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.train import checkpointing, inference, optimizers, train_state
from dsbs_jax.train.checkpointing import CheckpointError

CFG = t5_1_1_config("tiny", vocab_size=512)


@pytest.fixture(scope="module")
def states():
    """Two different sharded states (steps 3 and 6) and the restore template, on a (4, 2) mesh."""
    mesh = partitioning.create_mesh(4, 2)
    tx = optimizers.make_optimizer(optimizers.OptimizerConfig("adamw"), 10)
    boxed = network.abstract_params(CFG)
    shardings = train_state.state_shardings(tx, boxed, mesh, partitioning.STANDARD_LOGICAL_AXIS_RULES)
    a = train_state.init_state_sharded(lambda: network.init_params(CFG, jax.random.PRNGKey(0)), tx, shardings)
    b = train_state.init_state_sharded(lambda: network.init_params(CFG, jax.random.PRNGKey(1)), tx, shardings)
    a = a.replace(step=a.step + 3)
    b = b.replace(step=b.step + 6)
    return a, b, train_state.abstract_state(tx, boxed, shardings)


def _assert_same(x, y):
    for u, v in zip(jax.tree.leaves(x.to_saveable()), jax.tree.leaves(y.to_saveable())):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_round_trip_keeps_shardings_and_skips_unfinished_steps(states, tmp_path):
    a, b, template = states
    ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=5)
    ckpt.save(a, {"batches_consumed": 3, "seed": 0})
    ckpt.save(b, {"batches_consumed": 6, "seed": 0})
    ckpt.close()
    # What orbax leaves behind when a process dies mid-write: a step dir under its tmp name.
    shutil.copytree(tmp_path / "ckpt" / "6", tmp_path / "ckpt" / "9.orbax-checkpoint-tmp")
    reopened = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
    assert reopened.all_steps() == (3, 6)
    restored, data = reopened.restore(template)
    assert int(restored.step) == 6 and data["batches_consumed"] == 6
    _assert_same(restored, b)
    kernel = restored.params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
    earlier, _ = reopened.restore(template, step=3)
    _assert_same(earlier, a)
    reopened.close()


def test_keep_n_and_best_by_metric(states, tmp_path):
    a, _, _ = states
    ckpt = checkpointing.Checkpointer(str(tmp_path / "best"), max_to_keep=2, best_metric="acc")
    for step, acc in [(1, 0.2), (2, 0.9), (3, 0.1), (4, 0.5)]:
        ckpt.save(a.replace(step=a.step * 0 + step), {"batches_consumed": step}, metrics={"acc": acc})
    ckpt.close()
    assert sorted(checkpointing.Checkpointer(str(tmp_path / "best")).all_steps()) == [2, 4]


def _mount_tmpfs(path: pathlib.Path, size: str) -> None:
    path.mkdir(parents=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a small tmpfs here (needs root/CAP_SYS_ADMIN): {e}")


def test_disk_full_gives_a_clear_error_and_keeps_the_previous_checkpoint(states, tmp_path):
    a, b, template = states
    fs = tmp_path / "small_fs"
    _mount_tmpfs(fs, "8m")
    try:
        ckpt = checkpointing.Checkpointer(str(fs / "ckpt"))
        ckpt.save(a, {"batches_consumed": 3})
        ckpt.wait()
        # Fill the filesystem but 64 KiB, so that the next checkpoint (~1 MB) runs out of space.
        stat = os.statvfs(fs)
        with open(fs / "filler", "wb") as f:
            f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - 64 * 1024, 0))
        with pytest.raises(CheckpointError, match=r"Disk full while writing checkpoint step 6 .*MODEL_DIR"):
            ckpt.save(b, {"batches_consumed": 6})
            ckpt.wait()
        # The half-written step stays under orbax's tmp name and is never taken for complete.
        names = sorted(os.listdir(fs / "ckpt"))
        assert "3" in names and "6" not in names and any(n.startswith("6.orbax-checkpoint-tmp") for n in names)
        reopened = checkpointing.Checkpointer(str(fs / "ckpt"))
        assert reopened.latest_step() == 3
        restored, data = reopened.restore(template)
        _assert_same(restored, a)
        assert data["batches_consumed"] == 3
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def test_damaged_checkpoint_is_a_clear_error(states, tmp_path):
    a, _, template = states
    ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(a, {"batches_consumed": 3})
    ckpt.close()
    for f in (tmp_path / "ckpt" / "3" / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"\0garbage")
    with pytest.raises(CheckpointError, match=r"Checkpoint step 3 under .* cannot be read.*move .* away"):
        checkpointing.Checkpointer(str(tmp_path / "ckpt")).restore(template)


def test_unreadable_paths_for_inference(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        inference.load_for_inference(str(tmp_path / "missing"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint").write_bytes(b"not msgpack")
    with pytest.raises(CheckpointError, match="neither a `dsbs train` MODEL_DIR nor a readable T5X/Hugging Face"):
        inference.load_for_inference(str(tmp_path / "junk"))
