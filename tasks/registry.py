"""One function registers a dataset's whole task family (SeqIO names `{dataset}_{variant}_{labels}`).

For a dataset D, label source L ∈ {gold, llm} and a data fraction f (suffix `_frac{f}` when f < 100):

| name | inputs -> targets | role |
| --- | --- | --- |
| `D_label_L` | `predict: ` + x -> label | DSbS label task |
| `D_rationale` | `explain: ` + x -> rationale | DSbS rationale task |
| `D_dsbs_L` | mixture: `D_label_L` at rate α, `D_rationale` at 1 − α | Distilling step-by-step |
| `D_standard_L` | x -> label (no prefix) | standard finetuning (gold), task distillation (llm) |
| `D_single_L` | x -> rationale + " So the answer is " + label | single-task ablation |
| `D_paired_L` | both pairs in one example | the reference code's per-step α-weighted loss |

L = llm trains on the teacher's label; validation and test always use the gold label, so every
method is scored against the same answers. Mixture rates are sampling proportions, not loss
weights: with T5X's token-sum loss normalisation a sampled rationale (dozens of tokens) weighs
more than a label (a few tokens), so rate α is not the paper's loss weight α (see
`dsbs_jax/train/losses.py` and the paired mode for the reference's exact weighting).

Examples without what a task needs (a gold label, a teacher label, a rationale) are skipped by
that task; the manifest counts them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Mapping, Optional, Sequence

import gin
import seqio
import tensorflow as tf

from tasks import metrics, sources
from tasks.vocab import get_vocabulary

# Bump when preprocessing or the rationale data format changes: cached SeqIO data under
# `.../{TASK_VERSION}/` is then never mixed with data from an older definition.
TASK_VERSION = "v001"
LABEL_SOURCES = ("gold", "llm")
DEFAULT_FRACTIONS = (12.5, 25.0, 50.0, 100.0)
VARIANTS = ("label", "rationale", "standard", "single", "paired")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """How a dataset's tasks are built. `alpha` is the label task's mixture rate."""

    label_prefix: str = "predict: "
    rationale_prefix: str = "explain: "
    alpha: float = 0.5
    fraction_seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"TaskOptions.alpha must be in (0, 1), found {self.alpha}.")


def fraction_suffix(fraction: float) -> str:
    """'' for 100 %, else `_frac{f}` (e.g. `_frac12.5`)."""
    return "" if float(fraction) >= sources.FULL else f"_frac{float(fraction):g}"


def task_name(dataset: str, variant: str, labels: Optional[str] = None, fraction: float = sources.FULL) -> str:
    """E.g. `task_name('cqa', 'dsbs', 'llm', 25)` -> `cqa_dsbs_llm_frac25`."""
    parts = [dataset, variant] + ([labels] if labels and variant != "rationale" else [])
    return "_".join(parts) + fraction_suffix(fraction)


def _to_text(ex: dict, *, variant: str, labels: str, options: TaskOptions) -> dict:
    label = ex["teacher_label"] if labels == "llm" else ex["label"]
    # Whatever trains the model, evaluation is against gold labels.
    label = tf.where(ex["is_train"], label, ex["label"])
    x, rationale = ex["input"], ex["rationale"]
    predict = {"inputs": tf.strings.join([options.label_prefix, x]), "targets": label}
    explain = {"inputs": tf.strings.join([options.rationale_prefix, x]), "targets": rationale}
    if variant == "label":
        out = predict
    elif variant == "rationale":
        out = explain
    elif variant == "standard":
        out = {"inputs": x, "targets": label}
    elif variant == "single":
        joined = tf.strings.join([rationale, metrics.SINGLE_SEPARATOR, label])
        out = {"inputs": x, "targets": tf.where(ex["has_rationale"] > 0, joined, label)}
    else:
        out = {**predict, "rationale_inputs": explain["inputs"], "rationale_targets": explain["targets"]}
    return {**out, "id": ex["id"]}


def _keep(ex: dict, *, variant: str, labels: str) -> tf.Tensor:
    needs_teacher_label = tf.logical_and(ex["is_train"], labels == "llm")
    has_label = tf.where(needs_teacher_label, ex["has_teacher_label"] > 0, ex["has_label"] > 0)
    has_rationale = ex["has_rationale"] > 0
    if variant == "rationale":
        return has_rationale
    if variant == "paired":
        return tf.logical_and(has_label, has_rationale)
    if variant == "single":
        return tf.logical_and(has_label, tf.logical_or(has_rationale, tf.logical_not(ex["is_train"])))
    return has_label


def _text_preprocessor(ds: tf.data.Dataset, *, variant: str, labels: str, options: TaskOptions) -> tf.data.Dataset:
    ds = ds.filter(functools.partial(_keep, variant=variant, labels=labels))
    return ds.map(functools.partial(_to_text, variant=variant, labels=labels, options=options),
                  num_parallel_calls=tf.data.AUTOTUNE)


def _add_or_verify(name: str, signature: tuple, add) -> None:
    """Adds a task/mixture; the same definition again is a no-op, a different one an error."""
    registry = seqio.MixtureRegistry if name in seqio.MixtureRegistry.names() else seqio.TaskRegistry
    if name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names():
        existing = getattr(registry.get(name), "_dsbs_signature", None)
        if existing == signature:
            return
        raise ValueError(
            f"SeqIO name {name!r} is already registered with a different definition "
            f"({'ours: ' + repr(existing) if existing else 'not by dsbs-jax'}; new: {signature!r}). "
            "Remove it first (seqio.TaskRegistry.remove) or register the dataset under another name.")
    provider = add()
    provider._dsbs_signature = signature  # lets an identical re-import be recognised


@gin.configurable(denylist=["dataset", "data_dir"])
def register_dataset_tasks(
    dataset: str,
    data_dir: str,
    *,
    vocabulary: Optional[seqio.Vocabulary] = None,
    label_sources: Sequence[str] = LABEL_SOURCES,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    options: Optional[TaskOptions] = None,
    split_map: Optional[Mapping[str, str]] = None,
    metric: Optional[str] = None,
    with_rationales: bool = True,
) -> list[str]:
    """Registers the task family of one dataset directory (`{data_dir}/manifest.json`).

    Args:
      dataset: the name prefix of every task (usually the directory name).
      data_dir: a dataset directory written by `dsbs import` or `dsbs rationales`.
      vocabulary: defaults to `tasks.vocab.get_vocabulary()`.
      label_sources: "gold" and/or "llm" (teacher labels; needs teacher output).
      fractions: percentages of the training split; 100 registers the unsuffixed names.
      options: prefixes, mixture rate α and the fraction seed.
      split_map: SeqIO split -> our split, default train/valid/test -> train/valid/test.
      metric: "accuracy" or "equation"; default from the dataset's spec or manifest.
      with_rationales: False registers only the label/standard tasks (data without rationales).
    Returns:
      The registered task and mixture names.
    """
    from dsbs_jax.data import tfrecords

    options = options or TaskOptions()
    vocabulary = vocabulary or get_vocabulary()
    split_map = dict(split_map or sources.DEFAULT_SPLIT_MAP)
    manifest = tfrecords.read_manifest(data_dir)  # clear error when the directory is missing
    metric = metric or _metric_of(dataset, manifest)
    if metric not in metrics.LABEL_METRICS:
        raise ValueError(f"metric must be one of {sorted(metrics.LABEL_METRICS)}, found {metric!r}.")
    unknown = set(label_sources) - set(LABEL_SOURCES)
    if unknown:
        raise ValueError(f"label_sources must be among {LABEL_SOURCES}, found {sorted(unknown)}.")
    if not with_rationales:
        label_sources = [l for l in label_sources if l == "gold"]

    features = {k: seqio.Feature(vocabulary, add_eos=True) for k in ("inputs", "targets")}
    paired_features = {**features, **{k: seqio.Feature(vocabulary, add_eos=True)
                                      for k in ("rationale_inputs", "rationale_targets")}}
    label_metric = metrics.LABEL_METRICS[metric]
    names: list[str] = []

    def add_task(name, variant, labels, source, signature):
        postprocess = metrics.single_postprocessor if variant == "single" else metrics.strip_postprocessor
        metric_fns = ([metrics.token_f1] if variant == "rationale" else
                      [] if variant == "paired" else [label_metric])
        _add_or_verify(name, signature, lambda: seqio.TaskRegistry.add(
            name, source=source,
            preprocessors=[
                functools.partial(_text_preprocessor, variant=variant, labels=labels, options=options),
                seqio.preprocessors.tokenize,
                seqio.CacheDatasetPlaceholder(),
                seqio.preprocessors.append_eos_after_trim,
            ],
            output_features=paired_features if variant == "paired" else features,
            postprocess_fn=postprocess, metric_fns=metric_fns))
        names.append(name)

    for fraction in sorted({float(f) for f in fractions}):
        source = sources.make_source(data_dir, split_map, fraction, options.fraction_seed)
        base = (TASK_VERSION, data_dir, tuple(sorted(split_map.items())), fraction, options, metric,
                getattr(vocabulary, "sentencepiece_model_file", repr(vocabulary)))
        if with_rationales:
            add_task(task_name(dataset, "rationale", None, fraction), "rationale", "gold", source,
                     base + ("rationale",))
        for labels in label_sources:
            variants = ("label", "standard", "single", "paired") if with_rationales else ("label", "standard")
            for variant in variants:
                add_task(task_name(dataset, variant, labels, fraction), variant, labels, source,
                         base + (variant, labels))
            if with_rationales:
                mixture = task_name(dataset, "dsbs", labels, fraction)
                parts = [(task_name(dataset, "label", labels, fraction), options.alpha),
                         (task_name(dataset, "rationale", None, fraction), 1.0 - options.alpha)]
                _add_or_verify(mixture, base + ("dsbs", labels),
                               lambda parts=parts, mixture=mixture: seqio.MixtureRegistry.add(mixture, parts))
                names.append(mixture)
    return names


def _metric_of(dataset: str, manifest: Mapping) -> str:
    from dsbs_jax.data import specs

    try:
        return specs.get_spec(dataset).metric
    except (KeyError, ValueError):
        return manifest.get("metric", "accuracy")


def remove_dataset_tasks(dataset: str) -> None:
    """Removes every task and mixture whose name starts with `{dataset}_` (tests, notebooks)."""
    for registry in (seqio.MixtureRegistry, seqio.TaskRegistry):
        for name in list(registry.names()):
            if name.startswith(dataset + "_"):
                registry.remove(name)
