"""The `dsbs` command: a thin dispatcher; each subcommand lives in the module that owns it."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional, Sequence

from dsbs_jax import quiet

# name -> ("module:function", one-line help). Modules are imported lazily so that
# `dsbs rationales` never pays for JAX and `dsbs train` never pays for aiohttp.
SUBCOMMANDS = {
    "import": ("dsbs_jax.data.import_cli:main", "convert a dataset (release/TFDS/user JSONL/CSV) to TFRecords"),
    "rationales": ("dsbs_jax.rationales.cli:main", "run a teacher LLM over inputs -> rationale TFRecords"),
    "train": ("dsbs_jax.train.cli:train_main", "train a student with the embedded trainer (T5X gin surface)"),
    "eval": ("dsbs_jax.train.cli:eval_main", "evaluate a checkpoint on SeqIO label tasks"),
    "predict": ("dsbs_jax.train.predict:main", "labels (and rationales) for a JSONL file from a checkpoint"),
    "export": ("dsbs_jax.models.export:main", "a checkpoint as T5X (t5x.eval/infer) or Hugging Face (safetensors)"),
    "demo": ("dsbs_jax.experiments.demo:main", "the whole method end to end on a generated dataset (CPU)"),
    "sweep": ("dsbs_jax.experiments.sweep:main", "the paper's comparisons: methods x fractions x seeds x sizes"),
    "rehearse": ("dsbs_jax.experiments.t5x_rehearsal:main",
                 "the Cloud TPU path with real T5X at toy size on this CPU, before paying for a slice"),
}


def _usage() -> str:
    lines = ["usage: dsbs <command> [flags] [--verbose]   (dsbs <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "--verbose (any command): show TensorFlow/absl/CUDA/SentencePiece logs, hidden by default"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"dsbs: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    # `--verbose` belongs to every command: taken out here and passed on as DSBS_VERBOSE, so
    # subcommands (and their subprocesses) see it without each parser declaring it.
    if "--verbose" in rest:
        rest = [a for a in rest if a != "--verbose"]
        os.environ[quiet.ENV_VERBOSE] = "1"
    quiet.silence()  # before the subcommand's module pulls in TensorFlow/JAX/SeqIO
    module_name, function_name = SUBCOMMANDS[name][0].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
