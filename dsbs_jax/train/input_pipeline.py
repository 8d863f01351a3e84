"""SeqIO input pipeline of the trainer: deterministic, per-host sharded, resumable batches.

* `seqio.get_dataset` with `seqio.EncDecFeatureConverter(pack=True)` for mixture mode (packing on
  by default; segment ids and positions go to the model), or `PairedFeatureConverter` for the
  paired mode (both targets of one example side by side, never packed, so that the label and
  rationale halves of a batch hold the same inputs).
* Each host reads `seqio.ShardInfo(jax.process_index(), jax.process_count())` of the data and
  builds `batch_size / process_count` rows; the trainer assembles the global batch.
* Order is a pure function of `seed` (SeqIO's shuffle and mixture sampling are seeded, tf.data
  keeps deterministic order), so the iterator's position is just the number of batches consumed.
  A restart rebuilds the same dataset and skips that many batches (`Dataset.skip`), which is exact
  (asserted by the preemption test) and costs one pass over the skipped input. It avoids
  tf.data iterator checkpoints, whose size grows with the shuffle buffer.

TensorFlow is imported inside functions only: the train step runs on machines without TF.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any, Dict, Iterator, Mapping, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What `train_batches` reads.

    Attributes:
      mixture_or_task_name: registered SeqIO task or mixture.
      task_feature_lengths: e.g. {"inputs": 512, "targets": 256}; paired mode also accepts
        "rationale_inputs"/"rationale_targets" (default: the inputs/targets lengths).
      batch_size: global batch size (all hosts).
      split: SeqIO split.
      seed: shuffle/sampling seed; the same seed gives the same order.
      pack: pack several examples per row (mixture mode only).
      paired: use PairedFeatureConverter (examples need both target pairs).
      use_cached: read SeqIO's cache instead of preprocessing on the fly.
      shuffle: shuffle the examples.
    """

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    batch_size: int
    split: str = "train"
    seed: int = 0
    pack: bool = True
    paired: bool = False
    use_cached: bool = False
    shuffle: bool = True


class DataError(ValueError):
    """The training data cannot be read (missing task, empty dataset, bad lengths)."""


@functools.lru_cache(maxsize=None)
def paired_converter_cls():
    import seqio
    import tensorflow as tf

    class PairedFeatureConverter(seqio.FeatureConverter):
        """Converts `{inputs, targets, rationale_inputs, rationale_targets}` examples.

        Output: the EncDecFeatureConverter features of (inputs, targets) and the same features of
        (rationale_inputs, rationale_targets) prefixed with `rationale_`. Not packable: packing
        would split the two halves of an example across rows. Datasets without rationale
        features (gold-label evaluation tasks, which T5X also feeds through the model's feature
        converter) are converted exactly as `seqio.EncDecFeatureConverter` does. Rationale lengths
        default to the inputs/targets lengths, so T5X's two-key TASK_FEATURE_LENGTHS works.
        """

        _PAIRS = (("inputs", "targets", ""), ("rationale_inputs", "rationale_targets", "rationale_"))
        TASK_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
                         for i, t, _ in _PAIRS for k in (i, t)}
        MODEL_FEATURES = {p + k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
                          for _, _, p in _PAIRS for k in ("encoder_input_tokens", "decoder_target_tokens",
                                                          "decoder_input_tokens", "decoder_loss_weights")}
        PACKING_FEATURE_DTYPES = {}

        def __init__(self, **kwargs):
            if kwargs.get("pack"):
                raise ValueError("PairedFeatureConverter cannot pack: paired examples train unpacked "
                                 "(gin: PACK = False).")
            self._kwargs = {k: v for k, v in kwargs.items() if k != "pack"}
            super().__init__(pack=False, **self._kwargs)

        @staticmethod
        def with_rationale_lengths(task_feature_lengths):
            lengths = dict(task_feature_lengths)
            lengths.setdefault("rationale_inputs", lengths["inputs"])
            lengths.setdefault("rationale_targets", lengths["targets"])
            return lengths

        def __call__(self, ds, task_feature_lengths):
            if "rationale_inputs" not in ds.element_spec:
                plain = {k: task_feature_lengths[k] for k in ("inputs", "targets")}
                return seqio.EncDecFeatureConverter(pack=False, **self._kwargs)(ds, plain)
            lengths = self.with_rationale_lengths(task_feature_lengths)
            missing = [k for k in ("rationale_inputs", "rationale_targets") if k not in task_feature_lengths]
            if missing:
                ds = ds.map(lambda ex: _trim_with_eos(ex, {k: lengths[k] for k in missing}),
                            num_parallel_calls=tf.data.AUTOTUNE)
            return super().__call__(ds, lengths)

        def _convert_example(self, features):
            out = {}
            for inputs, targets, prefix in self._PAIRS:
                out[prefix + "encoder_input_tokens"] = features[inputs]
                out[prefix + "decoder_target_tokens"] = features[targets]
                out[prefix + "decoder_input_tokens"] = seqio.utils.make_autoregressive_inputs(
                    features[targets], bos_id=self.bos_id)
                out[prefix + "decoder_loss_weights"] = seqio.non_padding_position(features[targets])
            return out

        def _convert_features(self, ds, task_feature_lengths):
            ds = self._pack_or_pad(ds, task_feature_lengths)
            return ds.map(self._convert_example, num_parallel_calls=tf.data.AUTOTUNE)

        def get_model_feature_lengths(self, task_feature_lengths):
            lengths = self.with_rationale_lengths(task_feature_lengths)
            return {prefix + k: lengths[src]
                    for inputs, targets, prefix in self._PAIRS
                    for k, src in (("encoder_input_tokens", inputs), ("decoder_target_tokens", targets),
                                   ("decoder_input_tokens", targets), ("decoder_loss_weights", targets))}

    return PairedFeatureConverter


def _trim_with_eos(example, lengths, eos_id: int = 1):
    """`seqio.preprocessors.append_eos_after_trim` for features the task was not given a length for.

    T5X passes its two-key TASK_FEATURE_LENGTHS to the task, so the rationale features arrive
    untrimmed; T5's EOS id is 1.
    """
    import tensorflow as tf

    out = dict(example)
    for key, length in lengths.items():
        ids = example[key]
        out[key] = tf.cond(tf.size(ids) > length,
                           lambda ids=ids, length=length: tf.concat([ids[:length - 1], [eos_id]], axis=0),
                           lambda ids=ids: ids)
    return out


def paired_feature_converter():
    """A `PairedFeatureConverter` instance (class built lazily to keep TF out of module import)."""
    return paired_converter_cls()()


def feature_lengths(config: DataConfig) -> Dict[str, int]:
    lengths = dict(config.task_feature_lengths)
    for key in ("inputs", "targets"):
        if key not in lengths:
            raise DataError(f"TASK_FEATURE_LENGTHS={dict(config.task_feature_lengths)} lacks {key!r}; "
                            "expected e.g. {'inputs': 512, 'targets': 256} (gin: TASK_FEATURE_LENGTHS).")
    if config.paired:
        lengths = paired_converter_cls().with_rationale_lengths(lengths)
    else:
        lengths = {k: lengths[k] for k in ("inputs", "targets")}
    return lengths


# Our task module (`tasks/`): imported when a name is not registered yet, so `dsbs train/eval` find the
# datasets of $DSBS_DATA_ROOT without --gin.MIXTURE_OR_TASK_MODULE (T5X's run configs need it set).
DEFAULT_TASK_MODULE = "tasks"


def get_mixture_or_task(name: str):
    """The registered SeqIO task/mixture (importing `tasks` first if needed), or a DataError listing what is."""
    import importlib
    import sys

    import seqio

    if name not in seqio.TaskRegistry.names() | seqio.MixtureRegistry.names() and DEFAULT_TASK_MODULE not in sys.modules:
        try:
            importlib.import_module(DEFAULT_TASK_MODULE)
        except (OSError, ValueError) as e:  # a bad $DSBS_DATA_ROOT entry or manifest: the message names it
            raise DataError(str(e)) from None
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError as e:
        known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
        close = difflib.get_close_matches(name, known, n=20, cutoff=0.6)
        raise DataError(
            f"SeqIO task or mixture {name!r} is not registered ({e}). Registered with similar names: "
            f"{close or known[:20]}. Fix: point $DSBS_DATA_ROOT at the directory holding the dataset's "
            "manifest.json (the --out of `dsbs import` / `dsbs rationales`), name your own task module with "
            "--gin.MIXTURE_OR_TASK_MODULE, or fix --gin.DATASET / --gin.MIXTURE_OR_TASK_NAME.") from None


def build_dataset(config: DataConfig, *, shard_index: Optional[int] = None,
                  num_shards: Optional[int] = None, skip_batches: int = 0):
    """The per-host batched `tf.data.Dataset` of model features, repeated forever.

    Args:
      shard_index, num_shards: this host's share (default: `jax.process_index/count()`).
      skip_batches: batches already consumed (resume position).
    """
    import jax
    import seqio

    shard_index = jax.process_index() if shard_index is None else shard_index
    num_shards = jax.process_count() if num_shards is None else num_shards
    if config.batch_size % num_shards:
        raise DataError(f"BATCH_SIZE={config.batch_size} is not divisible by the {num_shards} hosts.")
    get_mixture_or_task(config.mixture_or_task_name)
    converter = paired_feature_converter() if config.paired else seqio.EncDecFeatureConverter(pack=config.pack)
    try:
        ds = seqio.get_dataset(
            config.mixture_or_task_name, task_feature_lengths=feature_lengths(config),
            feature_converter=converter, dataset_split=config.split, use_cached=config.use_cached,
            shuffle=config.shuffle, num_epochs=None, seed=config.seed,
            shard_info=seqio.ShardInfo(index=shard_index, num_shards=num_shards),
            batch_size=config.batch_size // num_shards)
    except (KeyError, ValueError) as e:
        hint = (" The paired loss needs examples with 'rationale_inputs'/'rationale_targets': train a "
                "paired method (dsbs, dsbs_llm) on its '{D}_paired_{L}' task." if config.paired else "")
        raise DataError(f"Cannot build the {config.split!r} dataset of {config.mixture_or_task_name!r}: "
                        f"{e}.{hint}") from e
    return ds.skip(skip_batches) if skip_batches else ds


class BatchIterator:
    """Numpy batches with a checkpointable position (`batches_consumed`)."""

    def __init__(self, config: DataConfig, *, start: int = 0, shard_index: Optional[int] = None,
                 num_shards: Optional[int] = None):
        self.config = config
        self.batches_consumed = start
        self._ds = build_dataset(config, shard_index=shard_index, num_shards=num_shards, skip_batches=start)
        self._it: Iterator[Any] = self._ds.as_numpy_iterator()

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        try:
            batch = next(self._it)
        except StopIteration:
            raise DataError(
                f"The {self.config.split!r} split of {self.config.mixture_or_task_name!r} yielded no "
                "examples (empty dataset: check its TFRecords/manifest, the split name and data fraction)."
            ) from None
        self.batches_consumed += 1
        return batch

    def state(self) -> Dict[str, Any]:
        """JSON-serialisable position, saved with each checkpoint."""
        return {"batches_consumed": self.batches_consumed, "seed": self.config.seed,
                "mixture_or_task_name": self.config.mixture_or_task_name}
