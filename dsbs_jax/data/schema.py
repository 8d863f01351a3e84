"""The canonical example record shared by every stage, and its `tf.train.Example` encoding.

One schema for gold data, teacher output and user data, so that adapters, the rationale
job and the SeqIO tasks never disagree about field names. Bump `SCHEMA_VERSION` whenever a
field changes meaning; readers refuse records from a newer version.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional, Sequence

SCHEMA_VERSION = 1

# SeqIO/T5X split names -> the split names our adapters write. The release has no e-SNLI/ANLI
# train file, so experiments may map "train" to "valid" (see tasks.registry).
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Example:
    """One input with its gold label and (after the rationale job) its teacher outputs.

    Attributes:
      id: stable identifier, unique within (dataset, split); used for resuming and fractions.
      dataset: dataset name, e.g. "cqa".
      split: one of SPLITS (or a user split name).
      input: the formatted input text x (already in the reference code's template).
      label: gold label text, or None for unlabeled data.
      choices: answer choices where the dataset has them (CQA), else empty.
      teacher_label: the parsed teacher label, or None when absent or unparsable.
      rationales: teacher rationales (first = primary); empty before the teacher ran.
      teacher_meta: JSON-serialisable metadata (model, raw output hash, parse status, ...).
        Never contains secrets.
    """

    id: str
    dataset: str
    split: str
    input: str
    label: Optional[str] = None
    choices: Sequence[str] = ()
    teacher_label: Optional[str] = None
    rationales: Sequence[str] = ()
    teacher_meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def rationale(self) -> Optional[str]:
        return self.rationales[0] if self.rationales else None

    def replace(self, **changes) -> "Example":
        return dataclasses.replace(self, **changes)


# Feature names in the TFRecords. Optional strings are stored as "" plus a has_* flag so that
# an empty label is never confused with a missing one.
FEATURES = (
    "schema_version", "id", "dataset", "split", "input", "label", "has_label", "choices",
    "teacher_label", "has_teacher_label", "rationales", "teacher_meta",
)


def to_tf_example_bytes(example: Example) -> bytes:
    """Serialises an Example to `tf.train.Example` bytes (TensorFlow imported lazily)."""
    import tensorflow as tf

    def _bytes(values: Sequence[str]) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))

    def _int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature = {
        "schema_version": _int(SCHEMA_VERSION),
        "id": _bytes([example.id]),
        "dataset": _bytes([example.dataset]),
        "split": _bytes([example.split]),
        "input": _bytes([example.input]),
        "label": _bytes([example.label or ""]),
        "has_label": _int(int(example.label is not None)),
        "choices": _bytes(list(example.choices)),
        "teacher_label": _bytes([example.teacher_label or ""]),
        "has_teacher_label": _int(int(example.teacher_label is not None)),
        "rationales": _bytes(list(example.rationales)),
        "teacher_meta": _bytes([json.dumps(dict(example.teacher_meta), sort_keys=True)]),
    }
    # deterministic=True sorts the feature map: otherwise the bytes depend on the process's hash
    # seed, and the same example written by two processes (or two Beam workers) differs.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def from_tf_example_bytes(serialized: bytes) -> Example:
    """Inverse of `to_tf_example_bytes`."""
    import tensorflow as tf

    parsed = tf.train.Example.FromString(serialized).features.feature

    def _strs(name: str) -> list[str]:
        return [v.decode("utf-8") for v in parsed[name].bytes_list.value]

    def _int(name: str) -> int:
        return int(parsed[name].int64_list.value[0])

    version = _int("schema_version")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"Record {_strs('id')[0]!r} has schema_version {version}, newer than this code's "
            f"{SCHEMA_VERSION}; upgrade dsbs-jax to read it.")
    return Example(
        id=_strs("id")[0],
        dataset=_strs("dataset")[0],
        split=_strs("split")[0],
        input=_strs("input")[0],
        label=_strs("label")[0] if _int("has_label") else None,
        choices=tuple(_strs("choices")),
        teacher_label=_strs("teacher_label")[0] if _int("has_teacher_label") else None,
        rationales=tuple(_strs("rationales")),
        teacher_meta=json.loads(_strs("teacher_meta")[0]),
    )


def tf_feature_description() -> dict:
    """The `tf.io.parse_single_example` spec for these records (used by the SeqIO tasks)."""
    import tensorflow as tf

    return {
        "schema_version": tf.io.FixedLenFeature([], tf.int64),
        "id": tf.io.FixedLenFeature([], tf.string),
        "dataset": tf.io.FixedLenFeature([], tf.string),
        "split": tf.io.FixedLenFeature([], tf.string),
        "input": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
        "has_label": tf.io.FixedLenFeature([], tf.int64),
        "choices": tf.io.VarLenFeature(tf.string),
        "teacher_label": tf.io.FixedLenFeature([], tf.string),
        "has_teacher_label": tf.io.FixedLenFeature([], tf.int64),
        "rationales": tf.io.VarLenFeature(tf.string),
        "teacher_meta": tf.io.FixedLenFeature([], tf.string),
    }
