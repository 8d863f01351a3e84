"""Loading a trained student for `dsbs eval` / `dsbs predict`: params, T5Config and run record.

Accepts our trainer's MODEL_DIR (orbax checkpoints plus `dsbs_run.json`), one of its step
directories (`MODEL_DIR/checkpoints/{step}`), or any T5X/Hugging Face checkpoint that
`dsbs_jax.models.checkpoints.load_pretrained` reads (then the model config comes from the
checkpoint or from the caller).
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Dict, Optional, Tuple

from dsbs_jax.models.config import T5Config
from dsbs_jax.train.checkpointing import CheckpointError

RUN_RECORD = "dsbs_run.json"


def _model_dir_and_step(path: pathlib.Path, step: Optional[int]) -> Optional[Tuple[pathlib.Path, pathlib.Path]]:
    """(model_dir, step_dir) if `path` is one of our trainer's outputs, else None."""
    if (path / RUN_RECORD).is_file() and (path / "checkpoints").is_dir():
        ckpt_root = path / "checkpoints"
        steps = sorted(int(p.name) for p in ckpt_root.iterdir() if p.name.isdigit())
        if not steps:
            raise CheckpointError(f"{path} has no complete checkpoint under {ckpt_root} (only "
                                  f"{sorted(p.name for p in ckpt_root.iterdir())}); train first or pick another dir.")
        chosen = steps[-1] if step is None else step
        if chosen not in steps:
            raise CheckpointError(f"{ckpt_root} has no step {chosen}; available: {steps}.")
        return path, ckpt_root / str(chosen)
    if path.name.isdigit() and path.parent.name == "checkpoints" and (path.parent.parent / RUN_RECORD).is_file():
        return path.parent.parent, path
    return None


def read_run_record(model_dir: os.PathLike) -> Dict[str, Any]:
    path = pathlib.Path(model_dir) / RUN_RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Cannot read {path}: {e}. It is written by `dsbs train`; pass the run's MODEL_DIR.") from e


def model_config_from_record(record: Dict[str, Any]) -> T5Config:
    fields = dict(record["model"])
    fields["mlp_activations"] = tuple(fields.get("mlp_activations", ("gelu", "linear")))
    return T5Config(**fields)


def _single_device_target(ckptr: Any, path: pathlib.Path) -> Any:
    """Restore target placing every array on this host's first device.

    Training may have run on a mesh with another device count; inference restores unsharded.
    """
    import jax

    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    meta = ckptr.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), dict(meta),
                        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))


def load_for_inference(path: str, *, step: Optional[int] = None,
                       model: Optional[T5Config] = None) -> Tuple[Any, T5Config, Dict[str, Any]]:
    """(plain host params, model config, run record ({} for foreign checkpoints)) from `path`.

    Raises:
      CheckpointError: the path is missing or unreadable, naming it and what was expected.
    """
    if not str(path).startswith("gs://"):
        path = os.path.abspath(os.path.expanduser(os.fspath(path)))  # orbax needs absolute paths
    p = pathlib.Path(os.fspath(path))
    if not str(path).startswith("gs://") and not p.exists():
        raise CheckpointError(f"Checkpoint path {path} does not exist (expected a `dsbs train` MODEL_DIR, a T5X "
                              "checkpoint or a Hugging Face T5 directory).")
    ours = None if str(path).startswith("gs://") else _model_dir_and_step(p, step)
    if ours is not None:
        import orbax.checkpoint as ocp

        model_dir, step_dir = ours
        record = {**read_run_record(model_dir), "step": int(step_dir.name)}
        config = model or model_config_from_record(record)
        try:
            with ocp.StandardCheckpointer() as ckptr:
                tree = ckptr.restore(step_dir / "state", _single_device_target(ckptr, step_dir / "state"))
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
            raise CheckpointError(f"Checkpoint {step_dir} cannot be read: {type(e).__name__}: {e}. Pick an "
                                  "earlier step (--step) or re-run training.") from e
        return tree["params"], config, record
    from dsbs_jax.models import checkpoints

    try:
        params, config = checkpoints.load_pretrained(str(path), model)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} is neither a `dsbs train` MODEL_DIR nor a readable T5X/Hugging Face "
                              f"checkpoint: {type(e).__name__}: {e}") from e
    return params, config, {}
