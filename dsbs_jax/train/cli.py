"""`dsbs train` and `dsbs eval`: gin flags in, `trainer.train` / `evaluation.evaluate_checkpoint` out.

    dsbs train --gin_file=models/tiny.gin --gin_file=runs/finetune.gin \
        --gin.METHOD=dsbs --gin.DATASET=cqa --gin.MODEL_DIR=/tmp/run \
        --gin.TASK_FEATURE_LENGTHS="{'inputs': 256, 'targets': 128}" --gin.TRAIN_STEPS=100
    dsbs eval --gin_file=runs/eval.gin --gin.CHECKPOINT_PATH=/tmp/run --gin.EVAL_TASKS="('cqa_label_gold',)"

Exit status 2 and a one-paragraph message on configuration errors (bad gin, missing task, empty
dataset, unreadable checkpoint, a MODEL_DIR another `dsbs train` holds); the final metrics are
printed as JSON on stdout. Ctrl-C or SIGTERM ends with one line naming the step reached and the
step the same command resumes from, and exit status 128 + the signal (130 for Ctrl-C).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
from typing import Callable, Optional, Sequence

from dsbs_jax import gin_utils

_USAGE = """usage: dsbs {cmd} --gin_file=FILE [--gin_file=FILE ...] [--gin.KEY=VALUE ...]
                 [--gin_bindings='KEY = VALUE'] [--gin_search_path=DIR]
                 [--coordinator_address=HOST:PORT --process_count=N --process_index=I]   (train, multi-host)

Gin files are looked up in ., --gin_search_path and the repository's gin/ directory
(models/*.gin, runs/{{finetune,eval}}.gin, experiments/*.gin). Values that are not Python literals
are taken as strings: --gin.OPTIMIZER=adamw. Required macros are listed at the top of the run config.
"""


def _run(cmd: str, argv: Optional[Sequence[str]], job: Callable[[gin_utils.GinArgs], dict]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(_USAGE.format(cmd=cmd))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from dsbs_jax.train import interrupts  # light: the handlers are in place before TensorFlow/orbax load

    try:
        with interrupts.raise_on_signals():
            return _report_errors(cmd, argv, job)
    except interrupts.Interrupted as e:
        report = e.describe() if cmd == "train" else f"interrupted ({e.signal_name})"
        print(f"dsbs {cmd}: {report}", file=sys.stderr)
        return e.exit_code


def _report_errors(cmd: str, argv: Sequence[str], job: Callable[[gin_utils.GinArgs], dict]) -> int:
    """Runs the job; configuration errors become one line and exit status 2, the result JSON on stdout."""
    from dsbs_jax.locks import LockedError
    from dsbs_jax.train import checkpointing, input_pipeline

    try:
        result = _parse_and_run(cmd, argv, job)
    except (gin_utils.GinConfigError, input_pipeline.DataError, checkpointing.CheckpointError, LockedError) as e:
        print(f"dsbs {cmd}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        # Config validation (__post_init__) errors name the field and the gin macro to set.
        if "gin:" in str(e) or "gin." in str(e):
            print(f"dsbs {cmd}: error: {e}", file=sys.stderr)
            return 2
        raise
    print(json.dumps(_jsonable(result), indent=2, sort_keys=True))
    return 0


def _parse_and_run(cmd: str, argv: Sequence[str], job: Callable[[gin_utils.GinArgs], dict]) -> dict:
    """Gin flags -> parsed config -> `job`; typed errors propagate to `_run`."""
    args = gin_utils.parse_flags(argv)
    if cmd == "train":  # multi-host flags (T5X's names); initialize before gin touches JAX
        from dsbs_jax.train import distributed

        try:
            multihost, rest = distributed.pop_flags(args.rest)
            settings = distributed.detect(**multihost)
        except ValueError as e:
            raise gin_utils.GinConfigError(str(e)) from None
        args = dataclasses.replace(args, rest=tuple(rest))
        distributed.maybe_initialize(settings)
    if args.rest:
        raise gin_utils.GinConfigError(f"Unknown flags {list(args.rest)}.\n" + _USAGE.format(cmd=cmd))
    gin_utils.parse(args)
    try:
        return job(args)
    except TypeError as e:
        if "TrainConfig." in str(e) or "EvalJobConfig." in str(e):
            raise gin_utils.GinConfigError(gin_utils.explain_type_error(e, "Config", args)) from e
        raise


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


def _train_job(_: gin_utils.GinArgs) -> dict:
    from dsbs_jax.train import trainer

    return trainer.train(trainer.TrainConfig())  # every field comes from gin


def _eval_job(_: gin_utils.GinArgs) -> dict:
    from dsbs_jax.train import evaluation

    return evaluation.evaluate_checkpoint(evaluation.EvalJobConfig())


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """`dsbs train`: parse gin, run `trainer.train`, print the final metrics as JSON."""
    return _run("train", argv, _train_job)


def eval_main(argv: Optional[Sequence[str]] = None) -> int:
    """`dsbs eval`: parse gin, evaluate a checkpoint on SeqIO label tasks, print metrics as JSON."""
    return _run("eval", argv, _eval_job)


if __name__ == "__main__":
    sys.exit(train_main())
