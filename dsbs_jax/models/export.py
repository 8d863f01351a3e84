"""`dsbs export`: a trained student as a T5X checkpoint or a Hugging Face T5 directory.

    dsbs export --checkpoint runs/cqa --format t5x --out exported/cqa_t5x   # -> exported/cqa_t5x/checkpoint_{step}
    dsbs export --checkpoint runs/cqa --format hf --out exported/cqa_hf     # config.json + model.safetensors

`--checkpoint` is anything `dsbs eval`/`dsbs predict` read: a `dsbs train` MODEL_DIR (newest step,
or `--step N`), one of its `checkpoints/{step}` directories, or a T5X/Hugging Face checkpoint.
`dsbs train` writes orbax `{MODEL_DIR}/checkpoints/{step}/state` (params and optimizer state),
which T5X refuses ("improperly formatted checkpoint directory"); the export rewrites the params.

* `t5x`: T5X's own layout (`checkpoint` msgpack + tensorstore arrays), what `t5x.eval`, `t5x.infer`
  and `RestoreCheckpointConfig` restore, with zero Adafactor slots shaped like T5X's default
  optimizer (`models/checkpoints.save_t5x_checkpoint`).
* `hf`: `config.json` + `model.safetensors` (+ `spiece.model`, the run's SentencePiece model) for
  `transformers.T5ForConditionalGeneration`. HF Linear weights are [out, in], T5X kernels
  [in, out]: every projection is transposed; the mapping is `hf_convert.hf_name_to_t5x` inverted.

The output head: T5 1.1 (our default, `logits_via_embedding=False`) has a separate head, written
as `lm_head.weight` with `tie_word_embeddings: false` (transformers 4.x's T5 1.1 layout);
transformers 5.x, which declares T5's head tied, sees the two tensors differ and keeps them apart
(it logs "both are present in the checkpoints with different values, so we will NOT tie them"),
so both load it exactly (tests/test_export.py, transformers 5.24). A tied student
(`logits_via_embedding=True`) writes only `shared.weight` and rescales, as original T5.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from dsbs_jax.models import hf_convert
from dsbs_jax.models.config import T5Config

FORMATS = ("t5x", "hf")
_HF_ACTIVATIONS = {v: k for k, v in hf_convert._ACTIVATIONS.items()}  # ("gelu", "linear") -> "gated-gelu"


def hf_config(config: T5Config) -> Dict[str, Any]:
    """The Hugging Face `config.json` of a T5Config (inverse of `hf_convert.t5_config_from_hf`)."""
    activations = tuple(config.mlp_activations)
    if activations not in _HF_ACTIVATIONS:
        raise ValueError(f"mlp_activations={activations} has no Hugging Face feed_forward_proj; supported: "
                         f"{sorted(_HF_ACTIVATIONS)}.")
    tied = bool(config.logits_via_embedding)
    return {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True,
        "vocab_size": config.vocab_size, "d_model": config.emb_dim, "d_kv": config.head_dim,
        "d_ff": config.mlp_dim, "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers, "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "layer_norm_epsilon": config.layer_norm_epsilon, "feed_forward_proj": _HF_ACTIVATIONS[activations],
        "dropout_rate": float(config.dropout_rate), "initializer_factor": 1.0,
        # transformers 4.x: tie_word_embeddings also means "scale decoder outputs by d_model**-0.5",
        # which is T5X's logits_via_embedding; transformers 5.x reads scale_decoder_outputs.
        "tie_word_embeddings": tied, "scale_decoder_outputs": tied,
        "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1, "use_cache": True,
    }


def _hf_names(config: T5Config) -> list:
    mlp = ["wi_0", "wi_1"] if len(config.mlp_activations) == 2 else ["wi"]
    names = []
    for stack, layers, subs in (("encoder", config.num_encoder_layers, (("SelfAttention", 0), ("mlp", 1))),
                                ("decoder", config.num_decoder_layers,
                                 (("SelfAttention", 0), ("EncDecAttention", 1), ("mlp", 2)))):
        names.append(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        for block in range(layers):
            for kind, sub in subs:
                prefix = f"{stack}.block.{block}.layer.{sub}"
                if kind == "mlp":
                    names += [f"{prefix}.DenseReluDense.{d}.weight" for d in (*mlp, "wo")]
                else:
                    names += [f"{prefix}.{kind}.{p}.weight" for p in "qkvo"]
                names.append(f"{prefix}.layer_norm.weight")
        names.append(f"{stack}.final_layer_norm.weight")
    return names


def t5x_to_hf_state_dict(params: Mapping[str, Any], config: T5Config) -> Dict[str, np.ndarray]:
    """HF T5 state dict (float32 numpy) of a T5X parameter tree; every parameter is used exactly once."""
    from flax.core import meta

    params = meta.unbox(params)
    if set(params) == {"params"}:
        params = params["params"]
    flat = {"/".join(k): np.asarray(v, np.float32) for k, v in _flatten(params).items()}
    out: Dict[str, np.ndarray] = {}
    used = set()
    for name in _hf_names(config):
        path, transpose = hf_convert.hf_name_to_t5x(name)
        if path not in flat:
            raise KeyError(f"parameter {path} (for {name}) is missing from the checkpoint.")
        out[name] = np.ascontiguousarray(flat[path].T if transpose else flat[path])
        used.add(path)
    out["shared.weight"] = flat["token_embedder/embedding"]
    used.add("token_embedder/embedding")
    if not config.logits_via_embedding:
        out["lm_head.weight"] = np.ascontiguousarray(flat["decoder/logits_dense/kernel"].T)
        used.add("decoder/logits_dense/kernel")
    unused = sorted(set(flat) - used)
    if unused:
        raise ValueError(f"parameters with no Hugging Face T5 counterpart: {unused}.")
    return out


def _flatten(tree: Mapping[str, Any], prefix=()) -> Dict[tuple, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def export_hf(params: Mapping[str, Any], config: T5Config, out: str, *, spm_path: Optional[str] = None) -> str:
    """Writes `{out}/config.json`, `{out}/model.safetensors` (and `spiece.model`); returns `out`."""
    from safetensors.numpy import save_file

    os.makedirs(out, exist_ok=True)
    tensors = t5x_to_hf_state_dict(params, config)
    save_file(tensors, os.path.join(out, hf_convert.SAFETENSORS_FILE), metadata={"format": "pt"})
    with open(os.path.join(out, hf_convert.CONFIG_FILE), "w") as f:
        json.dump(hf_config(config), f, indent=2, sort_keys=True)
    if spm_path and os.path.isfile(spm_path):
        shutil.copyfile(spm_path, os.path.join(out, "spiece.model"))  # T5Tokenizer's file name
    return out


def export(checkpoint: str, fmt: str, out: str, *, step: Optional[int] = None, overwrite: bool = False) -> str:
    """Loads `checkpoint` like `dsbs predict` and writes it in `fmt` under `out`; returns the written path."""
    from dsbs_jax.models import checkpoints
    from dsbs_jax.train.inference import load_for_inference

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {list(FORMATS)}.")
    params, config, record = load_for_inference(checkpoint, step=step)
    if fmt == "t5x":
        return checkpoints.save_t5x_checkpoint(params, out, int(record.get("step", step or 0)), overwrite=overwrite)
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite or pick another directory.")
    spm = (record.get("vocabulary") or {}).get("sentencepiece_model_file")
    return export_hf(params, config, out, spm_path=spm)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsbs export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a dsbs train MODEL_DIR, one of its step dirs, or T5X/HF")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="t5x: model dir (gets checkpoint_{step}/); hf: the directory")
    p.add_argument("--step", type=int, help="step of a MODEL_DIR (default: the newest)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from dsbs_jax.train.checkpointing import CheckpointError

    try:
        path = export(args.checkpoint, args.format, args.out, step=args.step, overwrite=args.overwrite)
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"dsbs export: error: {message}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
