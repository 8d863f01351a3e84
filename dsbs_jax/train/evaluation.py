"""Evaluation with `seqio.Evaluator`: batched greedy decoding on the label tasks.

Eval always scores gold labels: the trainer evaluates `{D}_label_{L}`-style tasks whose targets
are the gold answers, with the task's own metric functions (exact match after postprocessing;
SVAMP's numeric value of the equation), never the mixture's rationale task.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import gin
import numpy as np

from dsbs_jax.models import decoding
from dsbs_jax.models.config import T5Config


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Attributes:
      tasks: SeqIO task/mixture names to evaluate (label tasks with metric functions).
      split: SeqIO split ("validation" or "test").
      batch_size: decoding batch size (the last batch is padded to it).
      max_decode_length: generated tokens per example (the reference decodes <= 64).
      num_examples: evaluate only the first N examples per task (None: all).
      feature_lengths: {"inputs": n, "targets": m} hard limits; None lets SeqIO measure the data.
    """

    tasks: Tuple[str, ...]
    split: str = "validation"
    batch_size: int = 32
    max_decode_length: int = 64
    num_examples: Optional[int] = None
    feature_lengths: Optional[Mapping[str, int]] = None


def make_predict_fn(params_fn: Callable[[], Any], config: T5Config, batch_size: int,
                    max_decode_length: int) -> Callable:
    """The `predict_fn(dataset) -> [(index, token_ids)]` that `seqio.Evaluator` calls.

    `params_fn` returns the current (possibly sharded) params, so one Evaluator serves the whole run.
    Rows keep their full `max_decode_length` (zeros after EOS, as T5X): SeqIO stacks them into one
    array and its vocabulary decodes up to EOS.
    """
    def predict_fn(ds) -> List[Tuple[int, List[int]]]:
        params = params_fn()
        out: List[Tuple[int, List[int]]] = []
        for indices, inputs in _batches(ds, batch_size):
            tokens = np.asarray(decoding.generate(params, config, inputs, method="greedy",
                                                  max_decode_length=max_decode_length))
            out.extend((int(idx), row.tolist()) for idx, row in zip(indices, tokens[: len(indices)]))
        return out

    return predict_fn


def _batches(ds, batch_size: int):
    """(indices, encoder_input_tokens [batch_size, len]) from SeqIO's enumerated eval dataset."""
    indices: List[int] = []
    rows: List[np.ndarray] = []
    for index, features in ds.as_numpy_iterator():
        indices.append(int(index))
        rows.append(features["encoder_input_tokens"])
        if len(rows) == batch_size:
            yield indices, np.stack(rows).astype(np.int32)
            indices, rows = [], []
    if rows:
        # Pad to a full batch so every call reuses one compiled decoder.
        padded = np.zeros((batch_size, rows[0].shape[0]), np.int32)
        padded[: len(rows)] = np.stack(rows)
        yield indices, padded


class Evaluator:
    """Wraps one `seqio.Evaluator` per run; `evaluate(step)` -> {task: {metric: value}}."""

    def __init__(self, eval_config: EvalConfig, model_config: T5Config, log_dir: Optional[str] = None):
        import os

        import seqio

        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        self.eval_config = eval_config
        self.model_config = model_config
        self._evaluators = []
        for name in eval_config.tasks:
            loggers = (seqio.JSONLogger,) if log_dir else ()
            self._evaluators.append(seqio.Evaluator(
                mixture_or_task_name=name,
                feature_converter=seqio.EncDecFeatureConverter(pack=False),
                eval_split=eval_config.split, use_cached=False, seed=42,
                sequence_length=dict(eval_config.feature_lengths) if eval_config.feature_lengths else None,
                num_examples=eval_config.num_examples, logger_cls=loggers, log_dir=log_dir,
                async_compute_metrics=False))
        if not any(e.eval_tasks for e in self._evaluators):
            raise ValueError(
                f"None of the eval tasks {list(eval_config.tasks)} has a {eval_config.split!r} split with "
                "metric functions; set --gin.EVAL_TASKS to label tasks (e.g. 'cqa_label_gold') or "
                "--gin.EVAL_SPLIT.")

    def evaluate(self, params_fn: Callable[[], Any], step: int) -> Dict[str, Dict[str, float]]:
        predict_fn = make_predict_fn(params_fn, self.model_config, self.eval_config.batch_size,
                                     self.eval_config.max_decode_length)
        results: Dict[str, Dict[str, float]] = {}
        for evaluator in self._evaluators:
            if not evaluator.eval_tasks:
                continue
            metrics, _ = evaluator.evaluate(compute_metrics=True, step=step, predict_fn=predict_fn)
            for task, task_metrics in (metrics.result() or {}).items():
                results[task] = {k: float(_scalar(v)) for k, v in task_metrics.items()}
        return results


def _scalar(value: Any) -> float:
    """SeqIO metrics may be plain numbers or clu `Scalar`-like values."""
    value = getattr(value, "value", value)
    return float(np.asarray(value))


def flatten_metrics(results: Mapping[str, Mapping[str, float]], prefix: str = "eval") -> Dict[str, float]:
    """{task: {metric: v}} -> {"eval/task/metric": v}."""
    return {f"{prefix}/{task}/{k}": v for task, m in results.items() for k, v in m.items()}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalJobConfig:
    """`dsbs eval`: score a checkpoint on label tasks (gin/runs/eval.gin binds it).

    Attributes:
      checkpoint_path: a `dsbs train` MODEL_DIR (newest step, or `step`), or a T5X/HF checkpoint
        (CHECKPOINT_PATH).
      eval_tasks: SeqIO label tasks/mixtures (EVAL_TASKS; T5X's MIXTURE_OR_TASK_NAME also works);
        empty: the tasks recorded by `dsbs train` (its method's gold-label task).
      output_dir: where SeqIO's JSON logs and metrics.jsonl go (EVAL_OUTPUT_DIR; default
        `{checkpoint_path}/eval` for our model dirs).
      step: checkpoint step (None: newest).
      split, batch_size, num_examples: see `EvalConfig`.
      max_decode_length: None: the recorded run's (its method's), else 64.
      model: T5Config for foreign checkpoints without one (None: from the checkpoint).
    """

    checkpoint_path: str
    eval_tasks: Sequence[str] = ()
    output_dir: Optional[str] = None
    step: Optional[int] = None
    split: str = "validation"
    batch_size: int = 32
    max_decode_length: Optional[int] = None
    num_examples: Optional[int] = None
    model: Optional[T5Config] = None

    def __post_init__(self):
        if isinstance(self.eval_tasks, str):
            object.__setattr__(self, "eval_tasks", (self.eval_tasks,))
        for name, types in (("checkpoint_path", (str,)), ("batch_size", (int,)),
                            ("max_decode_length", (int, type(None)))):
            if not isinstance(getattr(self, name), types):
                raise TypeError(f"EvalJobConfig.{name}: expected {types[0].__name__}, found "
                                f"{getattr(self, name)!r}.")


def evaluate_checkpoint(config: EvalJobConfig) -> Dict[str, Any]:
    """Loads the checkpoint, evaluates every task; returns {"step", "eval": {...}, "eval/task/metric": v}."""
    import json
    import os

    from dsbs_jax.train import inference

    from dsbs_jax.train import input_pipeline

    checkpoint_path = os.path.abspath(config.checkpoint_path) if "://" not in config.checkpoint_path else \
        config.checkpoint_path
    params, model_config, record = inference.load_for_inference(checkpoint_path, step=config.step,
                                                                 model=config.model)
    eval_tasks = tuple(config.eval_tasks) or tuple(record.get("eval_tasks", ()))
    if not eval_tasks:
        raise ValueError(f"{config.checkpoint_path} records no eval tasks; set --gin.EVAL_TASKS (gin: EVAL_TASKS).")
    for name in eval_tasks:
        input_pipeline.get_mixture_or_task(name)
    decode_length = config.max_decode_length or int(record.get("max_decode_length", 64))
    output_dir = config.output_dir or os.path.join(checkpoint_path, "eval")
    os.makedirs(output_dir, exist_ok=True)
    evaluator = Evaluator(EvalConfig(tasks=eval_tasks, split=config.split, batch_size=config.batch_size,
                                     max_decode_length=decode_length, num_examples=config.num_examples),
                          model_config, log_dir=output_dir)
    step = int(config.step if config.step is not None else record.get("step", -1))
    results = evaluator.evaluate(lambda: params, step)
    flat = flatten_metrics(results)
    with open(os.path.join(output_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"checkpoint": config.checkpoint_path, "step": step, **flat}, sort_keys=True) + "\n")
    return {"step": step, "eval": results, **flat}
