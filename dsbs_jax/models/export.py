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
  The method's input prefixes go where T5's own checkpoints keep theirs, `task_specific_params`
  of `config.json` (`{"predict": {"prefix": "predict: ", "max_new_tokens": 64}, "explain": ...}`),
  with `generation_config.json` (greedy, the run's decode length) and a `README.md` model card
  that shows them in use: without `predict: ` a Distilling step-by-step student mixes its two
  tasks (`'What is 2 plus 3?' -> '5 + 8 = 5.'`).

The output head: T5 1.1 (our default, `logits_via_embedding=False`) has a separate head, written
as `lm_head.weight` with `tie_word_embeddings: false` (transformers 4.x's T5 1.1 layout);
transformers 5.x forces T5's `tie_word_embeddings` to True whatever `config.json` says (it reads the
flag as `scale_decoder_outputs`), sees the two tensors differ and keeps them apart, logging "both are
present in the checkpoints with different values, so we will NOT tie them". It does so for every
T5 1.1 checkpoint, Google's included; nothing in the export can silence it, and both versions load
the head exactly (tests/test_export.py, transformers 5.25). A tied student
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

from dsbs_jax import flags, methods
from dsbs_jax.models import hf_convert
from dsbs_jax.models.config import T5Config

FORMATS = ("t5x", "hf")
GENERATION_CONFIG_FILE = "generation_config.json"
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


def task_specific_params(record: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The run's tasks as T5's `task_specific_params`: what to put before x, and how long to decode.

    `predict` is the served task (the label); `explain` (Distilling step-by-step students) the
    rationale. Empty for a checkpoint without a run record (a T5X/HF input): its method is unknown.
    """
    name = record.get("method")
    if not name:
        return {}
    method = methods.get(name)
    lengths = record.get("task_feature_lengths") or {}
    params = {"predict": {"prefix": method.input_prefix,
                          "max_new_tokens": int(record.get("max_decode_length") or method.decode_length(lengths))}}
    if method.needs_rationales and method.input_prefix:
        params["explain"] = {"prefix": methods.EXPLAIN_PREFIX, "max_new_tokens": int(lengths.get("targets", 256))}
    return params


def _write_bytes(path: str, data: bytes) -> None:
    """Plain `open()`: the file gets the user's umask (safetensors' own writer made model files 0600)."""
    with open(path, "wb") as f:
        f.write(data)


def export_hf(params: Mapping[str, Any], config: T5Config, out: str, *, spm_path: Optional[str] = None,
              record: Optional[Mapping[str, Any]] = None) -> str:
    """Writes `{out}/config.json`, `model.safetensors`, `generation_config.json`, `README.md` (and
    `spiece.model`); returns `out`. `record` (the run's `dsbs_run.json`) supplies the prefixes."""
    from safetensors.numpy import save

    record = record or {}
    os.makedirs(out, exist_ok=True)
    tensors = t5x_to_hf_state_dict(params, config)
    _write_bytes(os.path.join(out, hf_convert.SAFETENSORS_FILE), save(tensors, metadata={"format": "pt"}))
    tasks = task_specific_params(record)
    with open(os.path.join(out, hf_convert.CONFIG_FILE), "w") as f:
        json.dump({**hf_config(config), **({"task_specific_params": tasks} if tasks else {})}, f, indent=2,
                  sort_keys=True)
    generation = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0, "do_sample": False,
                  "num_beams": 1, **({"max_new_tokens": tasks["predict"]["max_new_tokens"]} if tasks else {})}
    with open(os.path.join(out, GENERATION_CONFIG_FILE), "w") as f:
        json.dump(generation, f, indent=2, sort_keys=True)
    if spm_path and os.path.isfile(spm_path):
        shutil.copyfile(spm_path, os.path.join(out, "spiece.model"))  # T5Tokenizer's file name
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(model_card(record, tasks, has_vocabulary=os.path.isfile(os.path.join(out, "spiece.model"))))
    return out


def model_card(record: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]], *, has_vocabulary: bool) -> str:
    """The export's README.md: what the model does, its prefixes, and the lines that use them."""
    name = record.get("method")
    lines = ["# A T5 1.1 student exported by `dsbs export --format hf` (dsbs-jax)", ""]
    if name:
        method = methods.get(name)
        lines += [f"Method: `{name}`, {method.summary}. Trained on `{record.get('mixture_or_task_name')}`.", ""]
    if tasks:
        lines += ["Inputs need the method's prefix (also in `config.json`, `task_specific_params`):", "",
                  "| task | prefix | max_new_tokens |", "| --- | --- | --- |"]
        lines += [f"| {task} | `{p['prefix']!r}` | {p['max_new_tokens']} |" for task, p in tasks.items()]
        lines += ["", "`predict` gives the label; `explain` (Distilling step-by-step students) the rationale. "
                  "Without the prefix the model does neither reliably.", ""]
    else:
        lines += ["No run record came with this checkpoint: its input prefix is unknown.", ""]
    if has_vocabulary:
        lines += ["```python", "import sentencepiece, torch, transformers", "",
                  "export_dir = \"path/to/this/directory\"",
                  "model = transformers.T5ForConditionalGeneration.from_pretrained(export_dir)",
                  "spm = sentencepiece.SentencePieceProcessor(model_file=f\"{export_dir}/spiece.model\")",
                  "task = model.config.task_specific_params[\"predict\"]",
                  "ids = spm.encode(task[\"prefix\"] + \"your input\") + [1]  # 1: </s>",
                  "out = model.generate(torch.tensor([ids]), max_new_tokens=task[\"max_new_tokens\"])",
                  "print(spm.decode([t for t in out[0].tolist() if t > 1]))", "```", ""]
    lines += ["transformers 5.x logs that `shared.weight` and `lm_head.weight` differ and are not tied: T5 1.1 "
              "has a separate output head (`tie_word_embeddings: false`), and the model loads it as exported.", ""]
    return "\n".join(lines)


def export(checkpoint: str, fmt: str, out: str, *, step: Optional[int] = None, overwrite: bool = False) -> str:
    """Loads `checkpoint` like `dsbs predict` and writes it in `fmt` under `out`; returns the written path."""
    from dsbs_jax.models import checkpoints
    from dsbs_jax.train.inference import load_for_inference

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {list(FORMATS)}.")
    problem = flags.check_writable(out, "--out")
    if problem:
        raise ValueError(problem)
    if fmt == "hf" and os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite or pick another directory.")
    params, config, record = load_for_inference(checkpoint, step=step)
    if fmt == "t5x":
        return checkpoints.save_t5x_checkpoint(params, out, int(record.get("step", step or 0)), overwrite=overwrite)
    spm = (record.get("vocabulary") or {}).get("sentencepiece_model_file")
    return export_hf(params, config, out, spm_path=spm, record=record)


def _parser() -> argparse.ArgumentParser:
    p = flags.OneLineParser(prog="dsbs export", description=__doc__.split("\n\n")[0],
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
