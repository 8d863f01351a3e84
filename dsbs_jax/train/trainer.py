"""The embedded trainer: `train(TrainConfig) -> final metrics`, T5X's finetuning loop without T5X.

    from dsbs_jax.train.trainer import TrainConfig, train
    metrics = train(TrainConfig(method="dsbs", dataset="cqa", model_dir="/tmp/run",
                                task_feature_lengths={"inputs": 512, "targets": 256}, train_steps=10_000))
    metrics["eval/cqa_label_gold/accuracy"], metrics["final_loss"]

The method (`dsbs_jax/methods.py`) decides the training task, the loss, the feature converter,
the evaluation task and the decode length; TrainConfig only overrides them when asked.

The loop: build the mesh and the sharded state (fresh, from INITIAL_CHECKPOINT_PATH via
`checkpoints.load_pretrained`, or resumed from the newest complete orbax checkpoint in
`model_dir`), stream SeqIO batches (resuming at the saved position), run the jitted step, log to
TensorBoard (`clu.metric_writers`) and `{model_dir}/metrics.jsonl`, evaluate with
`seqio.Evaluator` every `eval_period` steps and at the end, checkpoint every `checkpoint_period`.
Side effects live here; the step itself is pure (`train_step.py`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import gin
import jax
import numpy as np

from dsbs_jax import flags, methods
from dsbs_jax.gin_utils import GinConfigError
from dsbs_jax.locks import ProcessLock
from dsbs_jax.models import network
from dsbs_jax.models.config import T5Config, t5_1_1_config
from dsbs_jax.train import (checkpointing, evaluation, input_pipeline, interrupts, optimizers, train_state, train_step,
                            vocabulary)
from dsbs_jax.train.inference import RUN_RECORD
from dsbs_jax.train.losses import LossConfig

log = logging.getLogger(__name__)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training (and evaluation) job. Gin binds it from T5X-named macros (gin/runs/finetune.gin).

    Attributes:
      method: a name of `dsbs_jax.methods.METHODS` (METHOD); None: the method that trains on
        `mixture_or_task_name`.
      dataset: dataset name, e.g. "cqa" (DATASET); with `method` it names the training task.
      data_fraction: percent of the training split (DATA_FRACTION; nested subsets).
      mixture_or_task_name: SeqIO mixture/task to train on (MIXTURE_OR_TASK_NAME); None: the
        method's task for `dataset` and `data_fraction`.
      task_feature_lengths: {"inputs": n, "targets": m} (TASK_FEATURE_LENGTHS).
      model_dir: checkpoints, metrics.jsonl, TensorBoard events (MODEL_DIR).
      train_steps: total optimizer steps, including those of a resumed run (TRAIN_STEPS).
      batch_size: global batch size in examples (BATCH_SIZE) for every method; a paired example
        carries both of its targets.
      model: the student's T5Config (MODEL_SIZE picks a t5_1_1 size in gin).
      dropout_rate: overrides `model.dropout_rate` when not None (DROPOUT_RATE).
      alpha, z_loss, loss_normalizing_factor: override the method's loss (None: the method's;
        see `losses.LossConfig`); label_smoothing: T5X's constant.
      optimizer, learning_rate, lr_schedule, warmup_steps, grad_clip_norm, weight_decay: see
        `optimizers.OptimizerConfig` (None = the optimizer's own default).
      num_microbatches: gradient accumulation slices per batch.
      mesh_shape: (data, model) device mesh; -1 in one entry takes the remaining devices.
      seed: parameter init, dropout and data order.
      pack: pack examples into rows (one-target methods only; then BATCH_SIZE counts rows). Off by
        default, as the reference trains on 64 unpacked examples per step.
      use_cached_tasks: read SeqIO's offline cache (USE_CACHED_TASKS; False for local runs).
      initial_checkpoint_path: T5X or HF checkpoint to start from (INITIAL_CHECKPOINT_PATH).
      checkpoint_period: steps between checkpoints (and one at the end).
      keep_checkpoints: keep this many (None: all) (KEEP_CHECKPOINTS).
      best_metric: keep the best by this eval metric, e.g. "eval/cqa_label_gold/accuracy".
      eval_period: steps between evaluations (None/0: only at the end; -1: never) (EVAL_PERIOD).
      eval_tasks: tasks to evaluate; empty = the method's gold-label task for the dataset.
      eval_split, eval_batch_size, eval_num_examples: see `evaluation.EvalConfig`.
      max_decode_length: None = the method's (64 for labels, the target length for single-task).
      allow_config_change: resume although the model, vocabulary, method or task differ from the
        recorded run (ALLOW_CONFIG_CHANGE); refused by default.
      log_period: steps between metric writes.
      async_checkpointing: write checkpoints in the background.
      progress_bar: show a tqdm bar.
    """

    task_feature_lengths: Mapping[str, int]
    model_dir: str
    train_steps: int
    method: Optional[str] = None
    dataset: Optional[str] = None
    data_fraction: float = 100.0
    mixture_or_task_name: Optional[str] = None
    batch_size: int = 64
    model: T5Config = dataclasses.field(default_factory=lambda: t5_1_1_config("small"))
    dropout_rate: Optional[float] = None
    alpha: Optional[float] = None
    z_loss: Optional[float] = None
    label_smoothing: float = 0.0
    loss_normalizing_factor: Optional[Any] = None
    optimizer: str = "adamw"
    learning_rate: Optional[float] = None
    lr_schedule: Optional[str] = None
    warmup_steps: int = 0
    grad_clip_norm: Optional[float] = None
    weight_decay: float = 0.0
    num_microbatches: int = 1
    mesh_shape: Tuple[int, int] = (-1, 1)
    seed: int = 0
    pack: bool = False
    use_cached_tasks: bool = False
    initial_checkpoint_path: Optional[str] = None
    checkpoint_period: int = 1000
    keep_checkpoints: Optional[int] = None
    best_metric: Optional[str] = None
    eval_period: Optional[int] = None
    eval_tasks: Sequence[str] = ()
    eval_split: str = "validation"
    eval_batch_size: int = 32
    max_decode_length: Optional[int] = None
    eval_num_examples: Optional[int] = None
    allow_config_change: bool = False
    log_period: int = 10
    async_checkpointing: bool = True
    progress_bar: bool = True

    def __post_init__(self):
        _check_types(self)
        if self.train_steps < 0 or self.batch_size <= 0:
            raise ValueError(f"TrainConfig: train_steps={self.train_steps} must be >= 0 and batch_size="
                             f"{self.batch_size} > 0 (gin: TRAIN_STEPS, BATCH_SIZE).")
        if self.batch_size % max(self.num_microbatches, 1):
            raise ValueError(f"TrainConfig: batch_size={self.batch_size} is not divisible by "
                             f"num_microbatches={self.num_microbatches} (gin: NUM_MICROBATCHES).")
        method = self.resolved()[0]  # validates METHOD / DATASET / MIXTURE_OR_TASK_NAME
        self.loss_config()  # validates loss fields
        self.optimizer_config()
        if self.pack and method.paired:
            raise ValueError(f"PACK=True: method {method.name!r} trains on paired examples, which cannot be "
                             "packed (gin: PACK = False).")

    def resolved(self) -> Tuple[methods.Method, str, Optional[str]]:
        """(method, training task, dataset) from METHOD/DATASET/DATA_FRACTION or MIXTURE_OR_TASK_NAME."""
        try:
            return methods.resolve(self.method, self.dataset, self.data_fraction, self.mixture_or_task_name)
        except ValueError as e:
            raise ValueError(f"{e} (gin: METHOD, DATASET, MIXTURE_OR_TASK_NAME)") from None

    @property
    def training_task(self) -> str:
        return self.resolved()[1]

    def loss_config(self) -> LossConfig:
        """The method's loss with this run's overrides."""
        loss = self.resolved()[0].loss
        overrides = {k: v for k, v in (("alpha", self.alpha), ("z_loss", self.z_loss),
                                      ("loss_normalizing_factor", self.loss_normalizing_factor)) if v is not None}
        return dataclasses.replace(loss, label_smoothing=self.label_smoothing, **overrides)

    def eval_task_names(self) -> Tuple[str, ...]:
        """EVAL_TASKS, else the method's gold-label task for the dataset."""
        if self.eval_tasks:
            return tuple(self.eval_tasks)
        method, task, dataset = self.resolved()
        if dataset is None:
            raise ValueError(f"Cannot tell which task scores {task!r}: set --gin.EVAL_TASKS (or DATASET).")
        return (method.eval_task(dataset),)

    def decode_length(self) -> int:
        if self.max_decode_length is not None:
            return self.max_decode_length
        return self.resolved()[0].decode_length(self.task_feature_lengths)

    def optimizer_config(self) -> optimizers.OptimizerConfig:
        return optimizers.OptimizerConfig(
            name=self.optimizer, learning_rate=self.learning_rate, schedule=self.lr_schedule,
            warmup_steps=self.warmup_steps, grad_clip_norm=self.grad_clip_norm, weight_decay=self.weight_decay)

    def model_config(self) -> T5Config:
        return self.model if self.dropout_rate is None else self.model.replace(dropout_rate=self.dropout_rate)


# field -> accepted types (bool is excluded from int fields explicitly below).
_FIELD_TYPES = {
    "mixture_or_task_name": (str, type(None)), "method": (str, type(None)), "dataset": (str, type(None)),
    "data_fraction": (float, int), "model_dir": (str,), "train_steps": (int,), "batch_size": (int,),
    "model": (T5Config,), "dropout_rate": (float, int, type(None)), "alpha": (float, int, type(None)),
    "z_loss": (float, int, type(None)), "label_smoothing": (float, int), "optimizer": (str,),
    "learning_rate": (float, int, type(None)), "num_microbatches": (int,), "seed": (int,), "pack": (bool,),
    "use_cached_tasks": (bool,), "initial_checkpoint_path": (str, type(None)), "checkpoint_period": (int,),
    "keep_checkpoints": (int, type(None)), "eval_period": (int, type(None)),
    "max_decode_length": (int, type(None)), "allow_config_change": (bool,),
    "eval_batch_size": (int,), "task_feature_lengths": (Mapping,), "mesh_shape": (tuple, list),
    "eval_tasks": (tuple, list), "log_period": (int,),
}


def _check_types(config: TrainConfig) -> None:
    for name, types in _FIELD_TYPES.items():
        value = getattr(config, name)
        bad = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if bad:
            expected = " or ".join(t.__name__ for t in types)
            raise TypeError(f"TrainConfig.{name}: expected {expected}, found {type(value).__name__} {value!r}.")
    for key, value in dict(config.task_feature_lengths).items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"TrainConfig.task_feature_lengths[{key!r}]: expected int, found {value!r}.")


def maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize(...)` for a multi-host run (flags/env, SLURM, Open MPI, Cloud TPU)."""
    from dsbs_jax.train import distributed

    distributed.maybe_initialize()


class _MetricsLog:
    """TensorBoard (clu) plus `{model_dir}/metrics.jsonl`; only process 0 writes."""

    def __init__(self, model_dir: str):
        from clu import metric_writers

        self._primary = jax.process_index() == 0
        self._writer = metric_writers.create_default_writer(model_dir, just_logging=not self._primary)
        self._jsonl = open(os.path.join(model_dir, "metrics.jsonl"), "a") if self._primary else None

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        self._writer.write_scalars(step, scalars)
        if self._jsonl:
            self._jsonl.write(json.dumps({"step": step, **scalars}, sort_keys=True) + "\n")
            self._jsonl.flush()

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
        if self._jsonl:
            self._jsonl.close()


def _create_mesh(shape: Sequence[int]):
    """(mesh, logical rules) for MESH_SHAPE = (data, model); one -1 entry takes the remaining devices."""
    from dsbs_jax.models import partitioning

    data, model = (int(s) for s in shape)
    n = jax.device_count()
    if data == -1 and model == -1:
        raise ValueError(f"MESH_SHAPE={tuple(shape)}: at most one entry may be -1 (gin: MESH_SHAPE).")
    if data == -1 or model == -1:
        known = model if data == -1 else data
        if known <= 0 or n % known:
            raise ValueError(f"MESH_SHAPE={tuple(shape)}: {n} devices are not divisible by {known} (gin: MESH_SHAPE).")
        data, model = (n // known, model) if data == -1 else (data, n // known)
    return partitioning.create_mesh(data, model), partitioning.STANDARD_LOGICAL_AXIS_RULES


def _choose_vocabulary(config: TrainConfig, model_config: T5Config) -> Tuple[vocabulary.VocabularyChoice, T5Config]:
    """The training task's vocabulary (read now: an unreadable one fails before any work) and a
    model whose embedding fits it (`vocabulary.fit_model`)."""
    task = input_pipeline.get_mixture_or_task(config.training_task)
    choice = vocabulary.describe(task.output_features["targets"].vocabulary)
    log.info("Vocabulary: %s", choice.describe())
    recorded = _recorded_run(config)
    fitted = vocabulary.fit_model(model_config, choice, pretrained=config.initial_checkpoint_path,
                                  recorded_vocab_size=(recorded.get("model") or {}).get("vocab_size"))
    if fitted.vocab_size != model_config.vocab_size:
        log.info("Model vocab_size %d -> %d: the vocabulary has %d ids, and rows past them would never be trained "
                 "yet could be decoded (as ⁇) (from scratch; T5X's padding to a multiple of %d)",
                 model_config.vocab_size, fitted.vocab_size, choice.ids, vocabulary.PAD_MULTIPLE)
    return choice, fitted


def _recorded_run(config: TrainConfig) -> Dict[str, Any]:
    """The run record of MODEL_DIR when it holds a checkpoint to resume, else {}."""
    path = os.path.join(config.model_dir, RUN_RECORD)
    if not (checkpointing.has_checkpoint(os.path.join(config.model_dir, "checkpoints")) and os.path.exists(path)):
        return {}
    with open(path) as f:
        return json.load(f)


def absolute_path(path: Optional[str]) -> Optional[str]:
    """`path` made absolute, so that a recorded run works from any directory; URLs unchanged."""
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


# What a resumed run must share with the recorded one: otherwise the checkpoint does not fit
# (model, vocabulary) or the run silently becomes another experiment (method, task, lengths).
_RESUME_KEYS = ("model", "vocabulary", "method", "mixture_or_task_name", "task_feature_lengths")


def run_record(config: TrainConfig, model_config: T5Config, choice: vocabulary.VocabularyChoice,
               eval_tasks: Sequence[str]) -> Dict[str, Any]:
    """What `dsbs predict`/`dsbs eval`/`dsbs export` need to rebuild and use the model."""
    method, task, dataset = config.resolved()
    record = {
        "model": dataclasses.asdict(model_config),
        "vocabulary": {"sentencepiece_model_file": absolute_path(choice.path), "extra_ids": choice.extra_ids},
        # Not compared on resume: the same file may be found another way.
        "vocabulary_choice": {"pieces": choice.pieces, "origin": choice.origin},
        "method": method.name,
        "dataset": dataset,
        "mixture_or_task_name": task,
        "task_feature_lengths": dict(config.task_feature_lengths),
        "eval_tasks": list(eval_tasks),
        "input_prefix": method.input_prefix,
        "postprocessor": method.postprocessor,
        "loss": dataclasses.asdict(config.loss_config()),
        "max_decode_length": config.decode_length(),
    }
    return json.loads(json.dumps(record))  # as read back from disk (tuples become lists)


def _check_resume(config: TrainConfig, record: Mapping[str, Any]) -> None:
    """Refuses to resume a run whose recorded configuration differs, naming what changed.

    Runs before anything is restored or written, so a refused resume leaves the run directory
    exactly as it was.
    """
    recorded = _recorded_run(config)
    if recorded and not config.allow_config_change:
        changed = [key for key in _RESUME_KEYS if key in recorded and recorded[key] != record[key]]
        if changed:
            diff = "; ".join(_describe_change(key, recorded[key], record[key]) for key in changed)
            raise checkpointing.CheckpointError(
                f"{config.model_dir} holds a run with another configuration ({diff}). Resume it with the "
                "recorded settings, start a new --gin.MODEL_DIR, or pass --gin.ALLOW_CONFIG_CHANGE=True.")


def _write_run_record(config: TrainConfig, record: Mapping[str, Any]) -> None:
    if jax.process_index() != 0:
        return
    path = os.path.join(config.model_dir, RUN_RECORD)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def _describe_change(key: str, old: Any, new: Any) -> str:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        fields = [f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                  if old.get(k) != new.get(k)]
        return ", ".join(fields)
    return f"{key}: {old!r} -> {new!r}"


def _initial_state(config: TrainConfig, model_config: T5Config, tx, shardings, ckpt: checkpointing.Checkpointer,
                   template) -> Tuple[train_state.TrainState, int]:
    """(state, batches already consumed): resumed, pretrained or fresh, in that order of preference."""
    if ckpt.latest_step() is not None:
        state, data_state = ckpt.restore(template)
        log.info("Resumed from %s step %d", ckpt.directory, int(state.step))
        saved = (data_state.get("mixture_or_task_name"), data_state.get("seed"))
        if saved != (config.training_task, config.seed):
            # Only reachable with ALLOW_CONFIG_CHANGE (or another seed): the saved position counts
            # batches of another stream, so resuming it is not exact.
            log.warning("Checkpoint data position is for %s but this run reads %s; the data order after "
                        "resuming differs from an uninterrupted run.", saved, (config.training_task, config.seed))
        return state, int(data_state.get("batches_consumed", int(state.step)))
    if config.initial_checkpoint_path:
        from dsbs_jax.models import checkpoints

        try:
            params, _ = checkpoints.load_pretrained(config.initial_checkpoint_path, model_config)
        except (OSError, ValueError, KeyError) as e:
            raise checkpointing.CheckpointError(
                f"INITIAL_CHECKPOINT_PATH={config.initial_checkpoint_path!r} cannot be loaded as a T5X or "
                f"Hugging Face checkpoint: {type(e).__name__}: {e}. Fix --gin.INITIAL_CHECKPOINT_PATH "
                "(or set it to None to train from scratch).") from e
        return train_state.state_from_params(network.unbox_params(params), tx, shardings), 0
    rng = jax.random.PRNGKey(config.seed)
    return train_state.init_state_sharded(lambda: network.init_params(model_config, rng), tx, shardings), 0


def _global_batch(local: Mapping[str, np.ndarray], sharding) -> Dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


TRAIN_LOCK = "train.lock"  # {MODEL_DIR}/train.lock: pid and host of the job training there


@dataclasses.dataclass
class _Progress:
    """The last step the loop ran, for the one-line report of an interrupted run (None: none yet)."""

    step: Optional[int] = None


def train(config: TrainConfig) -> Dict[str, Any]:
    """Trains (or resumes) and evaluates; returns the final metrics.

    Everything that can refuse (MODEL_DIR, tasks, vocabulary, a resume with another configuration,
    another job holding MODEL_DIR) refuses before MODEL_DIR is created or changed.

    Returns:
      {"step", "final_loss" (loss of the last step), "loss" (mean over the last log window),
       "eval": {task: {metric: value}}, "eval/{task}/{metric}": value, ..., "steps_per_s",
       "tokens_per_s", "model_dir"}.
    Raises:
      interrupts.Interrupted: SIGINT/SIGTERM under `interrupts.raise_on_signals`, with the step
        reached and the step the same command resumes from.
    """
    maybe_initialize_distributed()
    config = dataclasses.replace(config, model_dir=absolute_path(config.model_dir),
                                 initial_checkpoint_path=absolute_path(config.initial_checkpoint_path))
    problem = flags.check_writable(config.model_dir, "--gin.MODEL_DIR")
    if problem:
        raise GinConfigError(problem)
    choice, model_config = _choose_vocabulary(config, config.model_config())
    interrupts.check()
    eval_tasks = config.eval_task_names()
    record = run_record(config, model_config, choice, eval_tasks)
    _check_resume(config, record)
    created = not os.path.isdir(config.model_dir)
    os.makedirs(config.model_dir, exist_ok=True)
    lock = (ProcessLock(os.path.join(config.model_dir, TRAIN_LOCK), command="`dsbs train`",
                        consequence="two trainings in one MODEL_DIR would both write every step and checkpoint",
                        fix="Wait for it to finish, stop it, or pass another --gin.MODEL_DIR.")
            if jax.process_index() == 0 else contextlib.nullcontext())
    progress = _Progress()
    try:
        with lock:
            return _train_locked(config, model_config, record, eval_tasks, progress)
    except interrupts.Interrupted as interrupted:
        interrupted.step = progress.step
        done = checkpointing.complete_steps(os.path.join(config.model_dir, "checkpoints"))
        interrupted.resume_step = max(done) if done else 0
        raise
    except Exception:
        if created:
            _remove_if_unused(config.model_dir)
        raise


def _remove_if_unused(model_dir: str) -> None:
    """Removes a MODEL_DIR this call created when a check refused the run before it wrote anything
    (it then holds only the lock file and the evaluator's empty log dir)."""
    eval_dir = os.path.join(model_dir, "inference_eval")
    if set(os.listdir(model_dir)) <= {TRAIN_LOCK, "inference_eval"} and not (
            os.path.isdir(eval_dir) and os.listdir(eval_dir)):
        if os.path.isdir(eval_dir):
            os.rmdir(eval_dir)
        if os.path.exists(os.path.join(model_dir, TRAIN_LOCK)):
            os.remove(os.path.join(model_dir, TRAIN_LOCK))
        os.rmdir(model_dir)


def _train_locked(config: TrainConfig, model_config: T5Config, record: Mapping[str, Any], eval_tasks: Sequence[str],
                  progress: _Progress) -> Dict[str, Any]:
    loss_config = config.loss_config()
    # Eval settings (tasks, split) are checked before step 1, not found wrong after the last one.
    evaluator = _make_evaluator(config, model_config, eval_tasks) if _evaluates(config) else None
    _write_run_record(config, record)
    ckpt_dir = os.path.join(config.model_dir, "checkpoints")

    mesh, rules = _create_mesh(config.mesh_shape)
    tx = optimizers.make_optimizer(config.optimizer_config(), config.train_steps)
    boxed = network.abstract_params(model_config)
    shardings = train_state.state_shardings(tx, boxed, mesh, rules)
    template = train_state.abstract_state(tx, boxed, shardings)
    ckpt = checkpointing.Checkpointer(
        ckpt_dir, max_to_keep=config.keep_checkpoints,
        best_metric=config.best_metric, async_save=config.async_checkpointing)
    state, consumed = _initial_state(config, model_config, tx, shardings, ckpt, template)
    start_step = int(state.step)
    progress.step = start_step

    metrics_log = _MetricsLog(config.model_dir)
    results: Dict[str, Any] = {"model_dir": config.model_dir}
    try:
        if start_step < config.train_steps:
            state, loop_results = _train_loop(config, model_config, loss_config, mesh, rules, shardings, state,
                                              consumed, ckpt, metrics_log, evaluator, progress)
            results.update(loop_results)
        elif evaluator is not None:
            log.info("Checkpoint step %d >= TRAIN_STEPS=%d: evaluating only.", start_step, config.train_steps)
            eval_results = evaluator.evaluate(lambda: state.params, start_step)
            metrics_log.write(start_step, evaluation.flatten_metrics(eval_results))
            results["eval"] = eval_results
        results["step"] = int(state.step)
        results.update(evaluation.flatten_metrics(results.get("eval", {})))
        return results
    finally:
        with interrupts.deferred():  # a pending checkpoint write completes before the process ends
            metrics_log.close()
            ckpt.close()


def _evaluates(config: TrainConfig) -> bool:
    return config.eval_period is None or config.eval_period >= 0


def _make_evaluator(config: TrainConfig, model_config: T5Config, eval_tasks: Sequence[str]) -> evaluation.Evaluator:
    for name in eval_tasks:
        input_pipeline.get_mixture_or_task(name)
    return evaluation.Evaluator(
        evaluation.EvalConfig(tasks=tuple(eval_tasks), split=config.eval_split, batch_size=config.eval_batch_size,
                              max_decode_length=config.decode_length(), num_examples=config.eval_num_examples),
        model_config, log_dir=os.path.join(config.model_dir, "inference_eval"))


def _train_loop(config: TrainConfig, model_config: T5Config, loss_config: LossConfig, mesh, rules, shardings,
                state, consumed: int, ckpt: checkpointing.Checkpointer, metrics_log: _MetricsLog,
                evaluator: Optional[evaluation.Evaluator],
                progress: _Progress) -> Tuple[train_state.TrainState, Dict[str, Any]]:
    from tqdm import tqdm

    data = input_pipeline.BatchIterator(input_pipeline.DataConfig(
        mixture_or_task_name=config.training_task, task_feature_lengths=config.task_feature_lengths,
        batch_size=config.batch_size, seed=config.seed, pack=config.pack,
        paired=loss_config.mode == "paired", use_cached=config.use_cached_tasks), start=consumed)
    step_fn = train_step.make_train_step(
        network.Transformer(model_config), loss_config, shardings, mesh, rules,
        num_microbatches=config.num_microbatches, dropout_seed=config.seed,
        enable_dropout=model_config.dropout_rate > 0)
    b_sharding = train_step.batch_sharding(mesh)
    start = int(state.step)
    window: list = []
    tokens_total, t0 = 0.0, time.time()
    last_loss = last_window_loss = float("nan")
    last_eval = None
    bar = tqdm(total=config.train_steps, initial=start, desc="train", unit="step",
               disable=not config.progress_bar or jax.process_index() != 0, dynamic_ncols=True)
    try:  # the bar ends its line even when a signal stops the loop, so the report starts on its own
        for step in range(start + 1, config.train_steps + 1):
            local = next(data)
            tokens_total += float(sum(np.count_nonzero(v) for k, v in local.items()
                                      if k.endswith("encoder_input_tokens") or k.endswith("decoder_target_tokens")))
            interrupts.check()  # a signal whose exception a gc callback swallowed stops the run here
            state, metrics = step_fn(state, _global_batch(local, b_sharding))
            progress.step = step
            window.append(metrics)
            if step % config.log_period == 0 or step == config.train_steps:
                host = jax.device_get(window)
                window = []
                last_loss = float(host[-1]["loss"])
                elapsed = max(time.time() - t0, 1e-9)
                scalars = {k: float(np.mean([m[k] for m in host])) for k in host[-1]}
                last_window_loss = scalars["loss"]
                scalars.update({"steps_per_s": (step - start) / elapsed, "tokens_per_s": tokens_total / elapsed,
                                "learning_rate": float(optimizers.learning_rate_schedule(
                                    config.optimizer_config(), config.train_steps)(step - 1))})
                metrics_log.write(step, scalars)
                bar.set_postfix(loss=f"{scalars['loss']:.4g}", steps_s=f"{scalars['steps_per_s']:.2f}",
                                tok_s=f"{scalars['tokens_per_s']:.0f}")
                if not np.isfinite(last_loss):
                    raise FloatingPointError(f"Loss is {last_loss} at step {step}; lower --gin.LEARNING_RATE or "
                                             "check the data.")
            bar.update(1)
            eval_metrics = None
            final = step == config.train_steps
            if final:
                # The last checkpoint is written before the final evaluation, which can fail or be killed.
                with interrupts.deferred():  # never cut a checkpoint call short (see interrupts)
                    ckpt.save(state, data.state())
            if evaluator is not None and _eval_due(config, step, final):
                last_eval = evaluator.evaluate(lambda: state.params, step)
                eval_metrics = evaluation.flatten_metrics(last_eval)
                metrics_log.write(step, eval_metrics)
                line = f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in eval_metrics.items())
                # tqdm.write prints even with the bar disabled; callers that hide the bar report results themselves.
                if config.progress_bar:
                    bar.write(line)
                else:
                    log.info(line)
            if step % config.checkpoint_period == 0 and not final:
                with interrupts.deferred():
                    ckpt.save(state, data.state(), metrics=eval_metrics)
    finally:
        bar.close()
    elapsed = max(time.time() - t0, 1e-9)
    out = {"final_loss": last_loss, "loss": last_window_loss,
           "steps_per_s": (config.train_steps - start) / elapsed, "tokens_per_s": tokens_total / elapsed}
    if last_eval is not None:
        out["eval"] = last_eval
    return state, out


def _eval_due(config: TrainConfig, step: int, final: bool) -> bool:
    """Eval every `eval_period` steps and at the end; a negative period disables evaluation."""
    period = config.eval_period
    if period is not None and period < 0:
        return False
    return final or bool(period and step % period == 0)
