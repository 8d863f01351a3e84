"""Hugging Face T5 checkpoints -> T5X parameter trees (no torch or TF at import time).

A Hugging Face T5 directory holds `config.json` plus weights in `model.safetensors`,
`pytorch_model.bin`, or shards listed by `model.safetensors.index.json` /
`pytorch_model.bin.index.json`. HF stores `nn.Linear` weights as [out, in]; T5X's
`DenseGeneral` kernels are [in, out], so every projection is transposed. HF keeps one
relative-position table per stack in block 0 (`relative_attention_bias`, [buckets, heads]);
T5X shares one `relpos_bias/rel_embedding` [heads, buckets] per stack, so the two line up.

Output head, the one place the two libraries differ in what they can express:
* transformers 4.x T5 1.1 (`tie_word_embeddings: false`): separate `lm_head` [vocab, d_model],
  no rescaling -> `decoder/logits_dense/kernel` = lm_head.T.
* original T5 (`tie_word_embeddings: true`): logits = (y * d_model**-0.5) @ shared.T, which is
  exactly T5X's `logits_via_embedding=True` (T5X divides by sqrt(emb_dim)).
* transformers 5.x always ties `lm_head` to `shared` and records the rescaling separately as
  `scale_decoder_outputs`; with `scale_decoder_outputs: false` the head is shared.T without
  rescaling, which T5X cannot express with a tied embedding, so it becomes an (untied)
  `logits_dense` kernel initialised to shared.T: identical outputs, untied when fine-tuned.
"""
from __future__ import annotations

import json
import os
import re
import struct
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from dsbs_jax.models.config import T5Config

Params = Dict[str, Any]

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS_INDEX, SAFETENSORS_FILE, TORCH_INDEX, TORCH_FILE)

# HF `feed_forward_proj` -> T5X `mlp_activations`. HF's "gated-gelu" is `gelu_new`, the tanh
# approximation, which is what T5X's 'gelu' (flax `nn.gelu`, approximate=True) computes. Plain
# HF "gelu" is the exact erf GELU, which T5X's string activations cannot name, so it is refused.
_ACTIVATIONS = {
    "relu": ("relu",),
    "gated-gelu": ("gelu", "linear"),
    "gated-relu": ("relu", "linear"),
    "gated-silu": ("silu", "linear"),
}

# safetensors dtype tags (https://github.com/huggingface/safetensors, format section).
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


# ----------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------
def t5_config_from_hf(hf_config: Mapping[str, Any], *, source: str = CONFIG_FILE) -> T5Config:
    """Builds our `T5Config` from a Hugging Face T5 `config.json` dict."""
    proj = hf_config.get("feed_forward_proj", "relu")
    if proj not in _ACTIVATIONS:
        raise ValueError(
            f"{source}: feed_forward_proj={proj!r} is not supported; expected one of "
            f"{sorted(_ACTIVATIONS)} (T5 1.1 checkpoints use 'gated-gelu').")
    missing = [k for k in ("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "vocab_size")
               if k not in hf_config]
    if missing:
        raise ValueError(f"{source}: missing field(s) {missing} of a T5 config.")
    num_layers = int(hf_config["num_layers"])
    num_decoder_layers = hf_config.get("num_decoder_layers")
    return T5Config(
        vocab_size=int(hf_config["vocab_size"]),
        emb_dim=int(hf_config["d_model"]),
        num_heads=int(hf_config["num_heads"]),
        num_encoder_layers=num_layers,
        num_decoder_layers=int(num_decoder_layers) if num_decoder_layers is not None else num_layers,
        head_dim=int(hf_config["d_kv"]),
        mlp_dim=int(hf_config["d_ff"]),
        mlp_activations=_ACTIVATIONS[proj],
        dropout_rate=float(hf_config.get("dropout_rate", 0.1)),
        logits_via_embedding=_scales_decoder_outputs(hf_config),
        relative_attention_num_buckets=int(hf_config.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(hf_config.get("relative_attention_max_distance", 128)),
        layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-6)),
    )


def _scales_decoder_outputs(hf_config: Mapping[str, Any]) -> bool:
    """Whether HF multiplies the decoder output by d_model**-0.5 before the tied head."""
    if "scale_decoder_outputs" in hf_config:  # transformers >= 5
        return bool(hf_config["scale_decoder_outputs"])
    return bool(hf_config.get("tie_word_embeddings", True))  # transformers 4.x semantics


# ----------------------------------------------------------------------------------------
# Reading weights
# ----------------------------------------------------------------------------------------
def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """Reads a .safetensors file into numpy (bfloat16 via ml_dtypes, which numpy lacks)."""
    import ml_dtypes  # a jax dependency

    dtypes = dict(_SAFETENSORS_DTYPES, BF16=ml_dtypes.bfloat16)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(data)} bytes).")
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + header_len])
    except ValueError as e:
        raise ValueError(f"{path}: unreadable safetensors header ({e}).") from e
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}.")
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data, dtype=dtypes[info["dtype"]], count=int(np.prod(info["shape"], dtype=np.int64)),
                            offset=base + begin)
        if arr.nbytes != end - begin:
            raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {info['shape']}.")
        out[name] = arr.reshape(info["shape"])
    return out


def read_torch_bin(path: str) -> Dict[str, np.ndarray]:
    """Reads a `pytorch_model.bin` (needs torch, imported only here)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{path} is a PyTorch pickle and reading it needs torch (`pip install torch`); "
            "or convert it to safetensors with transformers' `save_pretrained(..., "
            "safe_serialization=True)`.") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 is exact.
            tensor = tensor.float()
        out[name] = tensor.numpy()
    return out


def read_hf_state_dict(directory: str) -> Dict[str, np.ndarray]:
    """All weight tensors of a HF model directory, HF names -> numpy arrays."""
    for fname in WEIGHT_FILES:
        path = os.path.join(directory, fname)
        if not os.path.exists(path):
            continue
        if fname.endswith(".index.json"):
            with open(path) as f:
                weight_map = json.load(f).get("weight_map")
            if not weight_map:
                raise ValueError(f"{path}: no 'weight_map' in the shard index.")
            reader = read_safetensors if fname.startswith("model.safetensors") else read_torch_bin
            out: Dict[str, np.ndarray] = {}
            for shard in sorted(set(weight_map.values())):
                shard_path = os.path.join(directory, shard)
                if not os.path.exists(shard_path):
                    raise FileNotFoundError(f"{path} lists shard {shard!r}, missing at {shard_path}.")
                out.update(reader(shard_path))
            return out
        return read_safetensors(path) if fname.endswith(".safetensors") else read_torch_bin(path)
    raise FileNotFoundError(
        f"{directory}: no Hugging Face weights found; expected one of {list(WEIGHT_FILES)}.")


# ----------------------------------------------------------------------------------------
# Name mapping
# ----------------------------------------------------------------------------------------
_ATTN = {"q": "query", "k": "key", "v": "value", "o": "out"}
# (stack, sub-layer index) -> T5X module name of that sub-layer's pre-layer-norm.
_NORMS = {
    ("encoder", "0"): "pre_attention_layer_norm",
    ("encoder", "1"): "pre_mlp_layer_norm",
    ("decoder", "0"): "pre_self_attention_layer_norm",
    ("decoder", "1"): "pre_cross_attention_layer_norm",
    ("decoder", "2"): "pre_mlp_layer_norm",
}
_ATTN_MODULE = {
    ("encoder", "SelfAttention"): "attention",
    ("decoder", "SelfAttention"): "self_attention",
    ("decoder", "EncDecAttention"): "encoder_decoder_attention",
}
_RE_ATTN = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.\d+\.(SelfAttention|EncDecAttention)\.([qkvo])\.weight")
_RE_RELPOS = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight")
_RE_NORM = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.layer_norm\.weight")
_RE_MLP = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.\d+\.DenseReluDense\.(wi|wi_0|wi_1|wo)\.weight")
_RE_FINAL_NORM = re.compile(r"(encoder|decoder)\.final_layer_norm\.weight")
_EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def hf_name_to_t5x(name: str) -> Tuple[str, bool] | None:
    """Maps one HF T5 tensor name to (T5X '/'-joined path, transpose?), or None if not a layer weight.

    E.g. `encoder.block.3.layer.0.SelfAttention.q.weight` -> (`encoder/layers_3/attention/query/kernel`, True).
    Embeddings and `lm_head` are handled by `hf_to_t5x_params` (they depend on tying).
    """
    if m := _RE_RELPOS.fullmatch(name):
        stack, block = m.groups()
        if block != "0":  # HF only creates the table in block 0; T5X has one per stack.
            raise ValueError(f"relative_attention_bias in block {block} ({name}): T5X shares one "
                             "table per stack, so only block 0 may have one.")
        return f"{stack}/relpos_bias/rel_embedding", True
    if m := _RE_ATTN.fullmatch(name):
        stack, block, kind, proj = m.groups()
        module = _ATTN_MODULE.get((stack, kind))
        if module is None:
            raise ValueError(f"{name}: {kind} is not expected in the {stack}.")
        return f"{stack}/layers_{block}/{module}/{_ATTN[proj]}/kernel", True
    if m := _RE_NORM.fullmatch(name):
        stack, block, sub = m.groups()
        if (stack, sub) not in _NORMS:
            raise ValueError(f"{name}: the {stack} has no sub-layer {sub}.")
        return f"{stack}/layers_{block}/{_NORMS[(stack, sub)]}/scale", False
    if m := _RE_MLP.fullmatch(name):
        stack, block, dense = m.groups()
        return f"{stack}/layers_{block}/mlp/{dense}/kernel", True
    if m := _RE_FINAL_NORM.fullmatch(name):
        stack = m.group(1)
        return f"{stack}/{stack}_norm/scale", False
    return None


def hf_to_t5x_params(state_dict: Mapping[str, np.ndarray], hf_config: Mapping[str, Any], *,
                     source: str = "state dict", dtype: Any = np.float32) -> Params:
    """Converts a HF T5 state dict to T5X's nested parameter tree (arrays cast to `dtype`).

    Shapes: HF Linear [out, in] -> kernel [in, out]; `shared` [vocab, d_model] ->
    `token_embedder/embedding` [vocab, d_model]; relative_attention_bias [buckets, heads] ->
    `rel_embedding` [heads, buckets].
    """
    flat: Dict[str, np.ndarray] = {}
    unknown = []
    for name, value in state_dict.items():
        mapped = hf_name_to_t5x(name)
        if mapped is None:
            if name not in _EMBEDDING_NAMES and name != "lm_head.weight":
                unknown.append(name)
            continue
        path, transpose = mapped
        flat[path] = np.asarray(value.T if transpose else value)
    if unknown:
        raise ValueError(f"{source}: tensors with no T5X counterpart: {sorted(unknown)}.")

    embedding = next((state_dict[k] for k in _EMBEDDING_NAMES if k in state_dict), None)
    if embedding is None:
        raise ValueError(f"{source}: no token embedding; expected one of {list(_EMBEDDING_NAMES)}.")
    flat["token_embedder/embedding"] = np.asarray(embedding)
    lm_head = state_dict.get("lm_head.weight")
    tied = lm_head is None or (lm_head.shape == embedding.shape and np.array_equal(lm_head, embedding))
    if _scales_decoder_outputs(hf_config):
        if not tied:
            raise ValueError(
                f"{source}: the config rescales decoder outputs (tied embeddings) but lm_head.weight "
                "differs from the shared embedding; T5X's logits_via_embedding cannot express that.")
    else:
        flat["decoder/logits_dense/kernel"] = np.asarray((embedding if lm_head is None else lm_head).T)

    tree: Params = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value.astype(dtype) if dtype is not None else value
    return tree


def is_hf_directory(path: str) -> bool:
    """True if `path` is a local directory with a HF config.json and weights."""
    return (os.path.isfile(os.path.join(path, CONFIG_FILE))
            and any(os.path.exists(os.path.join(path, f)) for f in WEIGHT_FILES))


def load_hf_checkpoint(path: str, *, dtype: Any = np.float32) -> Tuple[Params, T5Config]:
    """Loads a Hugging Face T5 directory as (T5X parameter tree, T5Config).

    Args:
      path: local directory with `config.json` and `model.safetensors` / `pytorch_model.bin`
        (or their sharded `*.index.json`), e.g. from `save_pretrained` or a hub snapshot.
      dtype: dtype of the returned arrays (parameters are float32 in this codebase).
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Hugging Face checkpoint directory not found: {path}")
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE}; is this a Hugging Face model directory?")
    with open(config_path) as f:
        hf_config = json.load(f)
    if hf_config.get("model_type", "t5") not in ("t5", "mt5"):
        raise ValueError(f"{config_path}: model_type={hf_config.get('model_type')!r}; only T5/mT5 "
                         "(shared relative position biases) map onto T5X's network.")
    config = t5_config_from_hf(hf_config, source=config_path)
    params = hf_to_t5x_params(read_hf_state_dict(path), hf_config, source=path, dtype=dtype)
    return params, config
