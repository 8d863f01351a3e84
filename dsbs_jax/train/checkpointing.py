"""Orbax checkpoints of the train state and the data-iterator position.

Layout: `{MODEL_DIR}/checkpoints/{step}/{state,data}` written by `ocp.CheckpointManager`
(async, keep-N, optional best-by-metric). Orbax writes each step into
`{step}.orbax-checkpoint-tmp-*` and renames it to `{step}` only once every file is on disk
(on GCS, where renames are not atomic, it writes a `commit_success.txt` marker instead); the
manager only lists finished step directories, so a checkpoint cut short by a crash or SIGKILL is
never restored (tests/test_train_checkpoint.py checks both the tmp-dir case and the resume).
"""
from __future__ import annotations

import errno
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import orbax.checkpoint as ocp

from dsbs_jax.train.train_state import TrainState

_DISK_FULL_MARKERS = ("No space left on device", "ENOSPC", "Disk quota exceeded", "RESOURCE_EXHAUSTED")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message says which and how to fix it."""


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _explain_save_error(exc: BaseException, directory: str, step: Optional[int]) -> CheckpointError:
    where = f"checkpoint step {step} under {directory}" if step is not None else f"a checkpoint under {directory}"
    for e in _chain(exc):
        if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
                m in str(e) for m in _DISK_FULL_MARKERS):
            return CheckpointError(
                f"Disk full while writing {where}: {e}. Free space on that filesystem, lower the number "
                "of kept checkpoints (gin: KEEP_CHECKPOINTS) or point --gin.MODEL_DIR elsewhere; the "
                "previous complete checkpoint is intact and training resumes from it.")
        if isinstance(e, PermissionError) or "Permission denied" in str(e):
            return CheckpointError(f"Permission denied while writing {where}: {e}. Make the directory "
                                   "writable or point --gin.MODEL_DIR elsewhere.")
    return CheckpointError(f"Writing {where} failed: {type(exc).__name__}: {exc}")


def complete_steps(directory: str) -> list:
    """The complete steps in `directory`, ascending (orbax renames `{step}.orbax-checkpoint-tmp-*` to `{step}`).

    Looked up without creating a CheckpointManager, which would create the directory.
    """
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def has_checkpoint(directory: str) -> bool:
    """Whether `directory` holds a complete step."""
    return bool(complete_steps(directory))


class Checkpointer:
    """Saves/restores `TrainState` plus a JSON data position with `ocp.CheckpointManager`.

    Args:
      directory: where step directories go (created).
      max_to_keep: keep this many most recent (or best) checkpoints; None keeps all.
      best_metric: e.g. "cqa_label_gold/accuracy": keep the best by this metric instead of the newest.
      best_mode: "max" or "min".
      async_save: write in a background thread (the next save or `wait` surfaces errors).
    """

    def __init__(self, directory: str, *, max_to_keep: Optional[int] = None, best_metric: Optional[str] = None,
                 best_mode: str = "max", async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self._last_step: Optional[int] = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            best_fn=(lambda m: float(m[best_metric])) if best_metric else None,
            best_mode=best_mode,
            keep_checkpoints_without_metrics=True,
            enable_async_checkpointing=async_save,
            create=True)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))
        except Exception as e:  # noqa: BLE001 - rewrapped with the directory and a fix
            raise _explain_save_error(e, self.directory, None) from e

    def latest_step(self) -> Optional[int]:
        """Newest *complete* step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> Tuple[int, ...]:
        return tuple(self._manager.all_steps())

    def save(self, state: TrainState, data_state: Mapping[str, Any], metrics: Optional[Mapping[str, float]] = None,
             force: bool = True) -> bool:
        """Starts writing a checkpoint of `state` at `state.step`; errors of the previous one surface here."""
        step = int(state.step)
        try:
            saved = self._manager.save(
                step, args=ocp.args.Composite(state=ocp.args.StandardSave(state.to_saveable()),
                                              data=ocp.args.JsonSave(dict(data_state))),
                metrics=dict(metrics) if metrics else None, force=force)
        except Exception as e:  # noqa: BLE001
            raise _explain_save_error(e, self.directory, step) from e
        self._last_step = step
        return saved

    def wait(self) -> None:
        """Blocks until the async write finishes; raises CheckpointError if it failed."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            raise _explain_save_error(e, self.directory, self._last_step) from e

    def restore(self, template: TrainState, step: Optional[int] = None) -> Tuple[TrainState, Dict[str, Any]]:
        """Restores `step` (default: latest complete) into the shardings/structure of `template`.

        Args:
          template: a TrainState of `jax.ShapeDtypeStruct`s with shardings (`train_state.abstract_state`).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"No complete checkpoint under {self.directory}.")
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template.to_saveable()), data=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"Checkpoint step {step} under {self.directory} cannot be read: {type(e).__name__}: {e}. "
                f"If it is damaged, move {os.path.join(self.directory, str(step))} away to resume from the "
                "previous step, or start afresh with a new --gin.MODEL_DIR.") from e
        return template.from_saveable(restored["state"]), dict(restored["data"])

    def close(self) -> None:
        """Waits for pending writes (raising CheckpointError on failure) and releases the manager."""
        try:
            self.wait()
        finally:
            self._manager.close()
