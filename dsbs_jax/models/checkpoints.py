"""Model parameters in T5X's on-disk checkpoint format, and pretrained-checkpoint loading.

T5X's `Checkpointer` (t5x/checkpoints.py) writes `{model_dir}/checkpoint_{step}/` holding
* `checkpoint`: a msgpack (flax.serialization) blob `{'version': 3, 'optimizer': state}` where
  `state = {'target': params, 'state': {'step': int32, 'param_states': ...}}`. Arrays that
  are partitioned (every model parameter, Adafactor's full `v`) are replaced by the JSON of
  the `tensorstore.Spec` they were written with; the rest (step, Adafactor's `v_row`,
  `v_col`, `m` and (1,) placeholders) are stored inline as numpy arrays.
* one zarr array per spec, in a directory named by the '/'-joined state path with '/'
  replaced by '.', e.g. `target.encoder.layers_0.attention.query.kernel/`. Spec paths are
  relative to the checkpoint directory; on GCS the spec names the dummy bucket
  `t5x-dummy-bucket` and readers substitute the real one, so checkpoints can be moved.
Version 0 files are plain flax state dicts (no 'optimizer' wrapper). T5X's newer Orbax
checkpoint manager writes the same state dict, without the wrapper, under
`checkpoint_{step}/state/` (an Orbax PyTree checkpoint); `load_t5x_checkpoint` reads all three.

Nothing here imports TensorFlow: local paths use the OS, `gs://` goes through tensorstore's
GCS kvstore, and only other URL schemes fall back to `tf.io.gfile` (imported lazily).
"""
from __future__ import annotations

import copy
import os
import re
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import tensorstore as ts
import tqdm
from flax import serialization

from dsbs_jax.models.config import T5Config
from dsbs_jax.models.hf_convert import is_hf_directory, load_hf_checkpoint

Params = Dict[str, Any]

VERSION = 3  # T5X's checkpoint VERSION since 2021-06 (bfloat16 stored natively).
CHECKPOINT_FILE = "checkpoint"
ORBAX_STATE_DIR = "state"
DUMMY_BUCKET = "t5x-dummy-bucket"
_CHUNK_BYTES = 64 * 1024 * 1024  # T5X's desired zarr chunk size.
_SPEC_KEYS = {"driver", "kvstore"}
_ORBAX_PLACEHOLDER = "PLACEHOLDER://"

__all__ = [
    "CheckpointMismatchError", "load_t5x_checkpoint", "save_t5x_checkpoint", "load_hf_checkpoint",
    "load_pretrained", "check_params", "infer_t5_config", "find_checkpoint", "t5x_adafactor_zero_state",
]


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameters do not match the model (names or shapes)."""


# ----------------------------------------------------------------------------------------
# File system (local, gs:// through tensorstore, anything else through tf.io.gfile)
# ----------------------------------------------------------------------------------------
def _gcs(path: str) -> Optional[Tuple[str, str]]:
    m = re.fullmatch(r"gs://([^/]+)/?(.*)", path, re.DOTALL)
    return (m.group(1), m.group(2).rstrip("/")) if m else None


def _is_url(path: str) -> bool:
    return "://" in path


def _gfile():
    import tensorflow as tf  # only for URL schemes other than gs://

    return tf.io.gfile


def _gcs_kvstore(bucket: str):
    return ts.KvStore.open({"driver": "gcs", "bucket": bucket}).result()


def _read_bytes(path: str) -> Optional[bytes]:
    """File contents, or None if the file does not exist."""
    if gcs := _gcs(path):
        result = _gcs_kvstore(gcs[0]).read(gcs[1]).result()
        return bytes(result.value) if result.state == "value" else None
    if _is_url(path):
        return _gfile().GFile(path, "rb").read() if _gfile().exists(path) else None
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def _write_bytes(path: str, data: bytes) -> None:
    if gcs := _gcs(path):
        _gcs_kvstore(gcs[0]).write(gcs[1], data).result()
    elif _is_url(path):
        with _gfile().GFile(path, "wb") as f:
            f.write(data)
    else:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def _list_children(path: str) -> List[str]:
    """Names directly under a directory (empty if it does not exist)."""
    if gcs := _gcs(path):
        bucket, prefix = gcs
        prefix = prefix + "/" if prefix else ""
        keys = _gcs_kvstore(bucket).list(ts.KvStore.KeyRange(prefix, prefix + "\xff")).result()
        return sorted({k.decode()[len(prefix):].split("/")[0] for k in keys})
    if _is_url(path):
        return [n.rstrip("/") for n in _gfile().listdir(path)] if _gfile().isdir(path) else []
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _is_file(path: str) -> bool:
    if _gcs(path) or _is_url(path):  # object stores: listed in the parent, nothing below it
        parent, name = path.rstrip("/").rsplit("/", 1)
        return name in _list_children(parent) and not _list_children(path)
    return os.path.isfile(path)


# ----------------------------------------------------------------------------------------
# Locating a checkpoint
# ----------------------------------------------------------------------------------------
def _steps(model_dir: str) -> List[int]:
    return sorted(int(m.group(1)) for n in _list_children(model_dir)
                  if (m := re.fullmatch(r"checkpoint_(\d+)", n)))


def find_checkpoint(path: str, step: Optional[int] = None) -> Tuple[str, str]:
    """Resolves `path` to ('msgpack' | 'orbax', location) like T5X's `find_checkpoint`.

    `path` may be the msgpack `checkpoint` file, a `checkpoint_{step}` directory, or a model
    directory holding `checkpoint_*` subdirectories (then `step`, or the latest, is used).
    """
    path = os.fspath(path).rstrip("/")
    if os.path.basename(path) == CHECKPOINT_FILE and _is_file(path):
        return "msgpack", path
    children = _list_children(path)
    if not children:
        raise FileNotFoundError(f"T5X checkpoint path does not exist or is empty: {path}")
    if CHECKPOINT_FILE in children and _is_file(os.path.join(path, CHECKPOINT_FILE)):
        return "msgpack", os.path.join(path, CHECKPOINT_FILE)
    if ORBAX_STATE_DIR in children:
        return "orbax", os.path.join(path, ORBAX_STATE_DIR)
    steps = _steps(path)
    if steps:
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f"{path} has no checkpoint_{step}; available steps: {steps}.")
        return find_checkpoint(os.path.join(path, f"checkpoint_{step}"))
    raise FileNotFoundError(
        f"{path} is not a T5X checkpoint: expected a '{CHECKPOINT_FILE}' msgpack file, an Orbax "
        f"'{ORBAX_STATE_DIR}/' directory, or checkpoint_<step>/ subdirectories; found {children[:10]}.")


def checkpoint_step(path: str) -> int:
    """The training step of a T5X `checkpoint_{step}` directory, from its state where readable.

    Local checkpoints are opened: the directory must be a T5X checkpoint, and a msgpack one's
    stored step must agree with its name. Object-store paths are not opened (that needs network and
    credentials): their `checkpoint_N` name gives the step. Raises FileNotFoundError or ValueError
    with a one-line message.
    """
    path = os.fspath(path).rstrip("/")
    named = re.fullmatch(r"checkpoint_(\d+)", os.path.basename(path))
    if _is_url(path):
        if named is None:
            raise ValueError(f"{path}: name the T5X checkpoint_N directory itself (e.g. .../checkpoint_1000000); "
                             "its step is read from that name")
        return int(named.group(1))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    kind, location = find_checkpoint(path)
    if os.path.dirname(location).rstrip("/") != path:
        raise ValueError(f"{path} is a model directory; pass one of its checkpoint_N directories "
                         f"({os.path.basename(os.path.dirname(location))} is the latest)")
    if kind == "msgpack":
        stored = _read_msgpack_state(location).get("state", {}).get("step")
        if stored is not None:
            if named is not None and int(stored) != int(named.group(1)):
                raise ValueError(f"{path}: the directory name says step {named.group(1)} but its state holds "
                                 f"step {int(stored)}")
            return int(stored)
    if named is None:
        raise ValueError(f"{path}: cannot tell its step; name the directory checkpoint_N as T5X does")
    return int(named.group(1))


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------
def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and _SPEC_KEYS <= set(value)


def _flatten(tree: Mapping[str, Any], prefix: Tuple[str, ...] = ()) -> Dict[Tuple[str, ...], Any]:
    """Flattens nested dicts, keeping tensorstore spec dicts (and empty dicts) as leaves."""
    out: Dict[Tuple[str, ...], Any] = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, Mapping) and value and not _is_spec(value):
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def _unflatten(flat: Mapping[Tuple[str, ...], Any]) -> Dict[str, Any]:
    tree: Dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _locate_spec(spec: Mapping[str, Any], ckpt_dir: str, name: str) -> Dict[str, Any]:
    """Points a checkpoint's relative tensorstore spec at `ckpt_dir` (cf. T5X
    `_update_ts_path_from_relative_to_absolute`), using the real bucket on GCS."""
    spec = copy.deepcopy(dict(spec))
    kvstore = spec.get("kvstore")
    if not isinstance(kvstore, dict):
        raise ValueError(f"{name}: unsupported tensorstore kvstore {kvstore!r} in the checkpoint.")
    # tensorstore >= 0.1.14 keeps the path in the kvstore, older versions at the top level.
    rel = kvstore.get("path", spec.pop("path", None))
    if rel is None:
        raise ValueError(f"{name}: tensorstore spec has no 'path': {spec}")
    if kvstore.get("driver") not in ("file", "gfile", "gcs"):
        raise ValueError(f"{name}: unsupported tensorstore kvstore driver {kvstore.get('driver')!r}.")
    if gcs := _gcs(ckpt_dir):
        spec["kvstore"] = {"driver": "gcs", "bucket": gcs[0], "path": f"{gcs[1]}/{rel}".lstrip("/")}
    elif _is_url(ckpt_dir):
        raise ValueError(f"{ckpt_dir}: tensorstore arrays can be read from local or gs:// paths only.")
    else:
        spec["kvstore"] = {"driver": "file", "path": os.path.join(ckpt_dir, rel)}
    return spec


def _read_spec(spec: Mapping[str, Any], ckpt_dir: str, name: str) -> Dict[str, Any]:
    """The spec to open a stored array for reading (cf. T5X `_read_ts`)."""
    spec = _locate_spec(spec, ckpt_dir, name)
    metadata = dict(spec.get("metadata", {}))
    # flax's `to_bytes` stores lists of plain (non-ts.Spec) dicts as {"0": .., "1": ..}.
    for key in ("shape", "chunks"):
        if isinstance(metadata.get(key), Mapping):
            metadata[key] = [metadata[key][str(i)] for i in range(len(metadata[key]))]
    # Like T5X, drop write-time choices so arrays written with other chunkings still open.
    metadata.pop("chunks", None)
    metadata.pop("compressor", None)
    spec["metadata"] = metadata
    if spec.get("dtype") == "uint16" or metadata.get("dtype") == "<u2":
        raise ValueError(f"{name}: bfloat16 stored as uint16 (T5X checkpoint version 2) is not supported.")
    return spec


def _read_msgpack_state(ckpt_file: str) -> Dict[str, Any]:
    data = _read_bytes(ckpt_file)
    if data is None:
        raise FileNotFoundError(f"T5X checkpoint file not found: {ckpt_file}")
    try:
        contents = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError(f"{ckpt_file}: not a T5X msgpack checkpoint ({type(e).__name__}: {e}).") from e
    if not isinstance(contents, dict):
        raise ValueError(f"{ckpt_file}: expected a msgpack map, found {type(contents).__name__}.")
    version = contents.get("version", 0)
    if version == 0:  # a plain flax state dict
        return contents
    if version < 2:
        raise ValueError(f"{ckpt_file}: T5X checkpoint version {version} is older than 2, which T5X "
                         "itself no longer reads.")
    if "optimizer" not in contents:
        raise ValueError(f"{ckpt_file}: version {version} checkpoint without an 'optimizer' entry.")
    return contents["optimizer"]


def orbax_tree_metadata(state_dir: str) -> Dict[str, Any]:
    """The state tree of an Orbax `state/` directory with each array's metadata (shape, dtype, sharding).

    Read by the PyTree handler itself: T5X's `checkpoint_N/state/` has no `_CHECKPOINT_METADATA` of
    its own (the checkpoint manager keeps it one level up), which `PyTreeCheckpointer.metadata` needs.
    """
    import orbax.checkpoint as ocp
    from etils import epath

    path = state_dir if _is_url(state_dir) else os.path.abspath(state_dir)  # Orbax wants absolute paths
    metadata = ocp.PyTreeCheckpointHandler().metadata(epath.Path(path))
    return metadata.tree if hasattr(metadata, "tree") else metadata


def _read_orbax_state(state_dir: str) -> Dict[str, Any]:
    import orbax.checkpoint as ocp

    state_dir = state_dir if _is_url(state_dir) else os.path.abspath(state_dir)
    checkpointer = ocp.PyTreeCheckpointer()
    tree = orbax_tree_metadata(state_dir)
    restore_args = _map_leaves(tree, lambda _: ocp.RestoreArgs(restore_type=np.ndarray))
    state = checkpointer.restore(state_dir, restore_args=restore_args)
    return _map_leaves(state, lambda x: x if x is None else np.asarray(x))


def _map_leaves(tree: Any, fn) -> Any:
    if isinstance(tree, Mapping) and not _is_spec(tree):
        return {k: _map_leaves(v, fn) for k, v in tree.items()}
    return fn(tree)


def load_t5x_checkpoint(path: str, *, step: Optional[int] = None, include_optimizer_state: bool = False,
                        dtype: Any = np.float32) -> Params:
    """Reads a T5X checkpoint (e.g. gs://t5-data/pretrained_models/t5x/t5_1_1_small/checkpoint_1000000).

    Args:
      path: `checkpoint_{step}` directory, its msgpack `checkpoint` file, or a model directory
        (then `step`, or the latest step, is read). Local or `gs://`.
      step: step to read when `path` is a model directory.
      include_optimizer_state: return T5X's whole state dict `{'target': params, 'state':
        {'step', 'param_states'}}` instead of only the parameters.
      dtype: floating parameters are cast to this (None keeps the stored dtype).

    Returns:
      The `target` tree: nested dicts of numpy arrays, e.g.
      `params['encoder']['layers_0']['attention']['query']['kernel']` [emb_dim, heads * head_dim].
    """
    kind, location = find_checkpoint(os.fspath(path), step)
    if kind == "orbax":
        state = _read_orbax_state(location)
    else:
        state = _read_msgpack_state(location)
    if "target" not in state:
        raise ValueError(f"{location}: no 'target' (parameters) in the checkpoint state; found keys "
                         f"{sorted(state)}.")
    if not include_optimizer_state:
        state = {"target": state["target"]}
    ckpt_dir = os.path.dirname(location)

    flat = _flatten(state)
    pending = {}
    for key, value in flat.items():
        name = "/".join(key)
        if _is_spec(value):
            pending[key] = ts.open(_read_spec(value, ckpt_dir, name), open=True)
        elif isinstance(value, str) and value.startswith(_ORBAX_PLACEHOLDER):
            raise ValueError(f"{location}: {name} is an Orbax placeholder; read the Orbax 'state/' directory.")
    for key, future in pending.items():
        try:
            pending[key] = future.result().read()
        except Exception as e:
            raise ValueError(f"{location}: cannot open the tensorstore array of {'/'.join(key)} ({e}).") from e
    for key, future in tqdm.tqdm(pending.items(), desc=f"reading {ckpt_dir}", unit="array", leave=False,
                                 disable=len(pending) < 64):
        flat[key] = np.asarray(future.result())

    def cast(key, x):
        if dtype is None or key[0] != "target" or not isinstance(x, np.ndarray):
            return x
        return x.astype(dtype) if x.dtype.kind == "f" or x.dtype.name == "bfloat16" else x

    state = _unflatten({k: cast(k, v) for k, v in flat.items()})
    return state if include_optimizer_state else state["target"]


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------
def _chunk_shape(shape: Tuple[int, ...], itemsize: int) -> List[int]:
    """Largest chunk shape that divides `shape` with at most _CHUNK_BYTES, shrinking big dims first."""
    chunk = list(shape)
    budget = max(1, _CHUNK_BYTES // itemsize)
    while int(np.prod(chunk, dtype=np.int64)) > budget:
        dim = int(np.argmax(chunk))
        size = chunk[dim]
        # The next smaller divisor of the full extent keeps chunks aligned with the array.
        chunk[dim] = next(d for d in range(size - 1, 0, -1) if shape[dim] % d == 0)
    return chunk


def _relative_spec(name: str, arr: np.ndarray, on_gcs: bool) -> Dict[str, Any]:
    """The spec T5X stores in the msgpack: path relative to the checkpoint dir ('/' -> '.')."""
    kvstore = {"driver": "file", "path": name.replace("/", ".")}
    if on_gcs:
        kvstore = {"driver": "gcs", "bucket": DUMMY_BUCKET, "path": name.replace("/", ".")}
    spec = {
        "driver": "zarr",
        "dtype": np.dtype(arr.dtype).name,
        "kvstore": kvstore,
        "metadata": {"compressor": {"id": "gzip"}, "shape": list(arr.shape),
                     "chunks": _chunk_shape(arr.shape, arr.dtype.itemsize)},
    }
    return ts.Spec(spec).to_json()  # T5X stores the normalised JSON of its ts.Spec


def t5x_adafactor_zero_state(params: Params, min_dim_size_to_factor: int = 128) -> Params:
    """Fresh `param_states` of T5X's Adafactor (t5x/adafactor.py `init_param_state`, default
    hyper-parameters: factored, beta1=None), so T5X restores our checkpoints without
    `fallback_to_scratch`. Unused slots are (1,) zeros, as T5X writes them.

    A 2-D parameter whose second-largest dimension is >= `min_dim_size_to_factor` gets
    factored `v_row` (largest dim removed) and `v_col` (second-largest removed); everything
    else a full `v`. (T5 params are <= 2-D, where T5X falls back to this heuristic.)
    """
    def init(x):
        shape = tuple(np.shape(x))
        state = {k: np.zeros((1,), np.float32) for k in ("m", "v", "v_col", "v_row")}
        order = np.argsort(shape) if len(shape) >= 2 else None
        if order is not None and shape[order[-2]] >= min_dim_size_to_factor:
            state["v_row"] = np.zeros(np.delete(shape, order[-1]), np.float32)
            state["v_col"] = np.zeros(np.delete(shape, order[-2]), np.float32)
        else:
            state["v"] = np.zeros(shape, np.float32)
        return state

    return _map_leaves(params, init)


def save_t5x_checkpoint(params: Params, path: str, step: int, *, optimizer_state: Optional[str] = "adafactor",
                        overwrite: bool = False, min_dim_size_to_factor: int = 128) -> str:
    """Writes `params` as T5X's `Checkpointer` would, to `{path}/checkpoint_{step}/`.

    Args:
      params: the parameter tree (T5X's `target`; a top-level {'params': ...} is unwrapped).
      path: model directory (local or gs://).
      step: training step, stored as `state/step` and in the directory name.
      optimizer_state: 'adafactor' writes zero Adafactor slots shaped like T5X's default
        Adafactor (so stock T5X fine-tuning gin restores it); None writes no `param_states`
        (then restore in T5X with `RestoreCheckpointConfig.fallback_to_scratch=True`).
      overwrite: replace an existing `checkpoint_{step}`.
      min_dim_size_to_factor: Adafactor's factoring threshold (T5X's default 128). Toy models
        pass a small one so that their slots are factored (`v_row`/`v_col`) like the public ones.

    Returns:
      The checkpoint directory.
    """
    from flax.core import meta

    params = meta.unbox(params)  # boxed (nn.LogicallyPartitioned) params from network.init
    if set(params) == {"params"}:
        params = params["params"]
    path = os.fspath(path).rstrip("/")
    final_dir = f"{path}/checkpoint_{int(step)}"
    on_gcs = _gcs(path) is not None
    if _is_url(path) and not on_gcs:
        raise ValueError(f"{path}: T5X checkpoints can be written to local or gs:// paths only.")
    if _list_children(final_dir):
        if not overwrite:
            raise FileExistsError(f"{final_dir} already exists; pass overwrite=True to replace it.")
        if not on_gcs:
            import shutil

            shutil.rmtree(final_dir)
    # Local writes go to a temporary directory renamed at the end, as T5X does; GCS has no
    # rename, so there the msgpack file, written last, marks the checkpoint complete.
    work_dir = final_dir if on_gcs else f"{final_dir}.tmp-{int(time.time())}"
    if not on_gcs:
        os.makedirs(work_dir, exist_ok=True)

    state: Dict[str, Any] = {"target": _map_leaves(params, np.asarray),
                             "state": {"step": np.asarray(step, np.int32)}}
    if optimizer_state == "adafactor":
        state["state"]["param_states"] = t5x_adafactor_zero_state(params, min_dim_size_to_factor)
    elif optimizer_state is not None:
        raise ValueError(f"optimizer_state={optimizer_state!r}; expected 'adafactor' or None.")

    flat = _flatten(state)
    writes = []
    for key, value in flat.items():
        name = "/".join(key)
        # What T5X partitions (and so writes to tensorstore): every parameter and full-size
        # Adafactor `v`; step, v_row/v_col and (1,) placeholders go inline in the msgpack.
        partitioned = key[0] == "target" or (key[-1] == "v" and value.shape != (1,))
        if not partitioned:
            continue
        rel = _relative_spec(name, value, on_gcs)
        store = ts.open(_locate_spec(rel, work_dir, name), create=True, open=True).result()
        writes.append(store.write(value))
        flat[key] = rel
    for w in tqdm.tqdm(writes, desc=f"writing {final_dir}", unit="array", leave=False, disable=len(writes) < 64):
        w.result()
    _write_bytes(f"{work_dir}/{CHECKPOINT_FILE}",
                 serialization.msgpack_serialize({"version": VERSION, "optimizer": _unflatten(flat)}))
    if not on_gcs:
        os.rename(work_dir, final_dir)
    return final_dir


# ----------------------------------------------------------------------------------------
# Validation and pretrained loading
# ----------------------------------------------------------------------------------------
def _flat_shapes(tree: Mapping[str, Any]) -> Dict[str, Tuple[int, ...]]:
    if set(tree) == {"params"}:
        tree = tree["params"]
    return {"/".join(k): tuple(np.shape(v)) if not hasattr(v, "shape") else tuple(v.shape)
            for k, v in _flatten(tree).items()}


def check_params(params: Mapping[str, Any], expected: Mapping[str, Any], *, source: str,
                 hint: str = "make the model config (e.g. --gin.MODEL_SIZE / T5Config) match the checkpoint") -> None:
    """Raises CheckpointMismatchError listing missing, unexpected and wrongly-shaped params.

    `expected` is any tree with shapes at the leaves (arrays, `jax.ShapeDtypeStruct`s).
    """
    got, want = _flat_shapes(params), _flat_shapes(expected)
    problems = []
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    if missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if unexpected:
        problems.append(f"in the checkpoint but not in the model: {unexpected}")
    for name in sorted(set(got) & set(want)):
        if got[name] != want[name]:
            problems.append(f"parameter '{name}' has shape {got[name]} in the checkpoint but the model "
                            f"expects {want[name]}")
    if problems:
        raise CheckpointMismatchError(f"{source} does not match the model: " + "; ".join(problems) + f". Fix: {hint}.")


def infer_t5_config(params: Params, base: Optional[T5Config] = None) -> T5Config:
    """Reads the T5 dimensions off a T5X parameter tree (T5X checkpoints store no config).

    Two input projections (`wi_0`, `wi_1`) are taken to be T5 1.1's gated GELU; one (`wi`) ReLU.
    The relative-position max distance is not stored and is kept from `base` (default 128).
    """
    try:
        vocab, emb = params["token_embedder"]["embedding"].shape
        heads, buckets = params["encoder"]["relpos_bias"]["rel_embedding"].shape
        inner = params["encoder"]["layers_0"]["attention"]["query"]["kernel"].shape[1]
        mlp = params["encoder"]["layers_0"]["mlp"]
    except KeyError as e:
        raise CheckpointMismatchError(f"not a T5X T5 parameter tree: missing {e}") from e
    gated = "wi_0" in mlp
    count = lambda stack: sum(1 for k in params[stack] if re.fullmatch(r"layers_\d+", k))
    return (base or T5Config()).replace(
        vocab_size=int(vocab), emb_dim=int(emb), num_heads=int(heads), head_dim=int(inner) // int(heads),
        num_encoder_layers=count("encoder"), num_decoder_layers=count("decoder"),
        mlp_dim=int((mlp["wi_0"] if gated else mlp["wi"])["kernel"].shape[1]),
        mlp_activations=("gelu", "linear") if gated else ("relu",),
        logits_via_embedding="logits_dense" not in params["decoder"],
        relative_attention_num_buckets=int(buckets))


def _model_param_shapes(config: T5Config) -> Params:
    """Shapes the network expects for `config` (`jax.ShapeDtypeStruct` leaves, no compute)."""
    from dsbs_jax.models import network  # the model, not this module, decides what it expects

    return network.unbox_params(network.abstract_params(config))


_ARCH_FIELDS = ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers", "num_decoder_layers", "head_dim",
                "mlp_dim", "mlp_activations", "logits_via_embedding", "relative_attention_num_buckets",
                "relative_attention_max_distance", "layer_norm_epsilon")


def load_pretrained(path: str, config: Optional[T5Config] = None) -> Tuple[Params, T5Config]:
    """Loads a T5X checkpoint or a Hugging Face T5 directory (auto-detected) for fine-tuning.

    Args:
      path: T5X `checkpoint_{step}` dir / model dir / msgpack file (local or gs://), or a local
        HF directory with `config.json` (the trainer's INITIAL_CHECKPOINT_PATH).
      config: the model config to validate against. None: HF's config.json, or for T5X the
        dimensions read off the parameter shapes (`infer_t5_config`).

    Returns:
      (params, config): the T5X parameter tree and the config to build the model with
      (`config` itself when given; training-only fields such as dropout are never overridden).

    Raises:
      CheckpointMismatchError: naming every missing/unexpected parameter or shape mismatch.
    """
    path = os.fspath(path)
    if not _is_url(path) and is_hf_directory(path):
        params, hf_config = load_hf_checkpoint(path)
        if config is None:
            return params, hf_config
        diffs = [f"{f}: checkpoint {getattr(hf_config, f)!r} vs model {getattr(config, f)!r}"
                 for f in _ARCH_FIELDS if tuple(np.atleast_1d(getattr(hf_config, f))) != tuple(
                     np.atleast_1d(getattr(config, f)))]
        if diffs:
            raise CheckpointMismatchError(
                f"{path}/config.json does not match the model config: " + "; ".join(diffs)
                + ". Fix: use the checkpoint's size (e.g. --gin.MODEL_SIZE) or pass config=None.")
        check_params(params, _model_param_shapes(config), source=path)
        return params, config
    params = load_t5x_checkpoint(path)
    if config is None:
        config = infer_t5_config(params)
    check_params(params, _model_param_shapes(config), source=path)
    return params, config
