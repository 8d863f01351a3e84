"""One function registers a dataset's whole task family: every SeqIO task a method of
`dsbs_jax/methods.py` trains or is scored on.

For a dataset D, label source L ∈ {gold, llm} and a data fraction f (suffix `_frac{f}` when f < 100):

| name | inputs -> targets | used by |
| --- | --- | --- |
| `D_standard_L` | x -> label (no prefix) | `standard` (gold), `distill` (llm); scores both |
| `D_paired_L` | `predict: ` x -> label and `explain: ` x -> rationale, in one example | `dsbs` (gold), `dsbs_llm` |
| `D_label_gold` | `predict: ` x -> label | scores every `dsbs*` method; part of the mixture |
| `D_rationale` | `explain: ` x -> rationale | part of the mixture |
| `D_dsbs_gold` | mixture: `D_label_gold` at the method's rate, `D_rationale` at 1 − rate | `dsbs_mixture` |
| `D_single_gold` | x -> rationale + " So the answer is " + label | `single` (scored on the label after the separator) |

L = llm trains on the teacher's label; validation and test always use the gold label, so every
method is scored against the same answers. Training examples whose teacher label or rationale is
missing are kept with an empty target, as the reference code does (its tokenizer turns "" into
EOS); `TaskOptions(drop_incomplete=True)` drops them instead. The manifest counts them
(`num_with_rationale`, `num_with_teacher_label`). Text `</s>` in an input becomes T5's EOS id, as
Hugging Face's tokenizer does (the reference joins NLI premise and hypothesis with it).

No gin configurables are registered here: T5X's `MIXTURE_OR_TASK_MODULE="tasks"` imports this
package after parsing gin, which must not add configurables.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import seqio
import tensorflow as tf

from dsbs_jax import methods
from dsbs_jax.data.vocab import EOS_TEXT
from dsbs_jax.methods import LABEL_SOURCES, fraction_suffix, task_name  # noqa: F401  (re-exported)
from tasks import metrics, sources
from tasks.vocab import get_vocabulary

# Bump when preprocessing or the rationale data format changes: cached SeqIO data under
# `.../{TASK_VERSION}/` is then never mixed with data from an older definition.
# v002: EOS id for `</s>` in inputs; incomplete training examples kept; methods own the family.
TASK_VERSION = "v002"
# The paper's data-size curves (12.5-100 %) and its ANLI headline (80 %).
DEFAULT_FRACTIONS = (12.5, 25.0, 50.0, 75.0, 80.0, 100.0)


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """How a dataset's tasks are built.

    Attributes:
      fraction_seed: seed of the nested training subsets (`sources.fraction_ids`).
      drop_incomplete: drop training examples that lack the teacher label or rationale a task
        trains on (the reference keeps them with empty targets).
    """

    fraction_seed: int = 0
    drop_incomplete: bool = False


def _train_label(ex: dict, labels: str) -> tf.Tensor:
    """The label a task trains on; validation and test always get the gold label."""
    label = ex["teacher_label"] if labels == "llm" else ex["label"]
    return tf.where(ex["is_train"], label, ex["label"])


def _predict_pair(ex: dict, labels: str) -> dict:
    return {"inputs": tf.strings.join([methods.PREDICT_PREFIX, ex["input"]]), "targets": _train_label(ex, labels)}


def _explain_pair(ex: dict) -> dict:
    return {"inputs": tf.strings.join([methods.EXPLAIN_PREFIX, ex["input"]]), "targets": ex["rationale"]}


def to_label(ex: dict, labels: str) -> dict:
    return _predict_pair(ex, labels)


def to_rationale(ex: dict, labels: str) -> dict:
    del labels
    return _explain_pair(ex)


def to_standard(ex: dict, labels: str) -> dict:
    return {"inputs": ex["input"], "targets": _train_label(ex, labels)}


def to_single(ex: dict, labels: str) -> dict:
    label = _train_label(ex, labels)
    joined = tf.strings.join([ex["rationale"], methods.SINGLE_SEPARATOR, label])
    # Evaluation targets are the gold label alone: the postprocessor extracts it from predictions.
    return {"inputs": ex["input"], "targets": tf.where(ex["is_train"], joined, label)}


def to_paired(ex: dict, labels: str) -> dict:
    explain = _explain_pair(ex)
    return {**_predict_pair(ex, labels), "rationale_inputs": explain["inputs"],
            "rationale_targets": explain["targets"]}


VARIANT_TO_TEXT: Mapping[str, Callable[[dict, str], dict]] = {
    "label": to_label, "rationale": to_rationale, "standard": to_standard, "single": to_single,
    "paired": to_paired}
_USES_RATIONALE = {"rationale", "single", "paired"}


def _keep(ex: dict, *, variant: str, labels: str, drop_incomplete: bool) -> tf.Tensor:
    """Scored splits need a gold label; training needs a gold label when it trains on one."""
    has_gold = ex["has_label"] > 0
    has_rationale = ex["has_rationale"] > 0
    if variant == "rationale":
        return tf.where(ex["is_train"], has_rationale if drop_incomplete else tf.constant(True), has_rationale)
    train_ok = has_gold if labels == "gold" else tf.constant(True)
    if drop_incomplete:
        if labels == "llm":
            train_ok = ex["has_teacher_label"] > 0
        if variant in _USES_RATIONALE:
            train_ok = tf.logical_and(train_ok, has_rationale)
    return tf.where(ex["is_train"], train_ok, has_gold)


def _text_preprocessor(ds: tf.data.Dataset, *, variant: str, labels: str, drop_incomplete: bool) -> tf.data.Dataset:
    ds = ds.filter(functools.partial(_keep, variant=variant, labels=labels, drop_incomplete=drop_incomplete))
    to_text = VARIANT_TO_TEXT[variant]
    return ds.map(lambda ex: {**to_text(ex, labels), "id": ex["id"]}, num_parallel_calls=tf.data.AUTOTUNE)


def encode_text_tf(vocabulary: seqio.Vocabulary, text: tf.Tensor) -> tf.Tensor:
    """int32 ids of a scalar string, with each literal `</s>` encoded as the EOS id.

    Hugging Face's T5 tokenizer splits special tokens out before SentencePiece and encodes the
    pieces separately (each with SentencePiece's leading-space marker); SentencePiece alone would
    turn `</s>` into `<unk>`, `s`, ... pieces. `dsbs_jax.data.vocab.encode_text` is the Python twin.
    """
    pieces = tf.strings.split(text, sep=EOS_TEXT)
    ids = tf.cast(vocabulary.encode_tf(pieces), tf.int32)
    eos = tf.fill([tf.shape(pieces)[0], 1], tf.constant(vocabulary.eos_id, tf.int32))
    return tf.concat([ids, eos], axis=1).flat_values[:-1]


def tokenize_with_special_tokens(ds: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """`seqio.preprocessors.tokenize` (keeping `{k}_pretokenized`) with `</s>` -> EOS id."""
    def tokenize(ex):
        out = dict(ex)
        for key, feature in output_features.items():
            if key in ex:
                out[f"{key}_pretokenized"] = ex[key]
                out[key] = encode_text_tf(feature.vocabulary, ex[key])
        return out

    return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)


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


def register_dataset_tasks(
    dataset: str,
    data_dir: Union[str, Sequence[str]],
    *,
    vocabulary: Optional[seqio.Vocabulary] = None,
    label_sources: Sequence[str] = LABEL_SOURCES,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    options: Optional[TaskOptions] = None,
    split_map: Optional[Mapping[str, str]] = None,
    metric: Optional[str] = None,
    with_rationales: bool = True,
) -> list[str]:
    """Registers every task and mixture the methods name for one dataset directory.

    Args:
      dataset: the name prefix of every task (usually the directory name).
      data_dir: a dataset directory written by `dsbs import` or `dsbs rationales`, or several
        (each split is read from the first that has it, e.g. the teacher's train and the import's
        valid and test).
      vocabulary: defaults to `tasks.vocab.get_vocabulary()`.
      label_sources: "gold" and/or "llm" (teacher labels; needs teacher output): methods training
        on another source are skipped.
      fractions: percentages of the training split; 100 registers the unsuffixed names.
      options: the fraction seed and whether incomplete training examples are dropped.
      split_map: SeqIO split -> our split, default train/validation/test -> train/valid/test.
      metric: "accuracy" or "equation"; default from the dataset's spec or manifest.
      with_rationales: False skips the methods that need rationales (data without them).
    Returns:
      The registered task and mixture names.
    """
    from dsbs_jax.data import tfrecords

    options = options or TaskOptions()
    vocabulary = vocabulary or get_vocabulary()
    split_map = dict(split_map or sources.DEFAULT_SPLIT_MAP)
    dirs = (data_dir,) if isinstance(data_dir, str) else tuple(data_dir)
    manifests = [tfrecords.read_manifest(d) for d in dirs]  # clear error when a directory is missing
    metric = metric or _metric_of(dataset, manifests)
    if metric not in metrics.LABEL_METRICS:
        raise ValueError(f"metric must be one of {sorted(metrics.LABEL_METRICS)}, found {metric!r}.")
    unknown = set(label_sources) - set(LABEL_SOURCES)
    if unknown:
        raise ValueError(f"label_sources must be among {LABEL_SOURCES}, found {sorted(unknown)}.")
    chosen = [m for m in methods.METHODS.values()
              if m.label_source in label_sources and (with_rationales or not m.needs_rationales)]

    features = {k: seqio.Feature(vocabulary, add_eos=True) for k in ("inputs", "targets")}
    paired_features = {**features, **{k: seqio.Feature(vocabulary, add_eos=True)
                                      for k in ("rationale_inputs", "rationale_targets")}}
    label_metric = metrics.LABEL_METRICS[metric]
    vocab_id = getattr(vocabulary, "sentencepiece_model_file", repr(vocabulary))
    names: list[str] = []
    sources_by_fraction: dict = {}

    def add_task(name: str, fraction: float) -> None:
        ref = methods.parse_task_name(name)
        variant, labels = ref.variant, ref.labels or "gold"
        signature = (TASK_VERSION, data_dir, tuple(sorted(split_map.items())), fraction, options, metric,
                     vocab_id, variant, labels)
        postprocess = metrics.single_postprocessor if variant == "single" else metrics.strip_postprocessor
        metric_fns = ([metrics.token_f1] if variant == "rationale" else
                      [] if variant == "paired" else [label_metric])
        if fraction not in sources_by_fraction:
            sources_by_fraction[fraction] = sources.make_source(dirs, split_map, fraction, options.fraction_seed)
        source = sources_by_fraction[fraction]
        _add_or_verify(name, signature, lambda: seqio.TaskRegistry.add(
            name, source=source,
            preprocessors=[
                functools.partial(_text_preprocessor, variant=variant, labels=labels,
                                  drop_incomplete=options.drop_incomplete),
                tokenize_with_special_tokens,
                seqio.CacheDatasetPlaceholder(),
                seqio.preprocessors.append_eos_after_trim,
            ],
            output_features=paired_features if variant == "paired" else features,
            postprocess_fn=postprocess, metric_fns=metric_fns))
        names.append(name)

    for fraction in sorted({float(f) for f in fractions}):
        for method in chosen:
            for name in method.component_tasks(dataset, fraction) + (method.eval_task(dataset),):
                if name not in names:
                    add_task(name, methods.parse_task_name(name).fraction)
            if method.is_mixture:
                mixture = method.train_task(dataset, fraction)
                label_task, rationale_task = method.component_tasks(dataset, fraction)
                parts = [(label_task, method.mixture_rate), (rationale_task, 1.0 - method.mixture_rate)]
                _add_or_verify(mixture, (TASK_VERSION, data_dir, fraction, method.name, tuple(parts)),
                               lambda parts=parts, mixture=mixture: seqio.MixtureRegistry.add(mixture, parts))
                names.append(mixture)
    return names


def _metric_of(dataset: str, manifests: Sequence[Mapping]) -> str:
    from dsbs_jax.data import specs

    try:
        return specs.get_spec(dataset).metric
    except (KeyError, ValueError):
        return next((m["metric"] for m in manifests if "metric" in m), "accuracy")


def remove_dataset_tasks(dataset: str) -> None:
    """Removes every task and mixture whose name starts with `{dataset}_` (tests, notebooks)."""
    for registry in (seqio.MixtureRegistry, seqio.TaskRegistry):
        for name in list(registry.names()):
            if name.startswith(dataset + "_"):
                registry.remove(name)
