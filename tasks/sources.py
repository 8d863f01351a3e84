"""SeqIO data sources over our TFRecords, and deterministic nested data fractions.

A source reads the shards a dataset's `manifest.json` lists, parses them with the canonical
schema, keeps a fraction of the training split, and marks each example with `is_train` so that
label tasks can train on teacher labels while always evaluating on gold labels.
"""
from __future__ import annotations

import functools
import hashlib
import math
from typing import Mapping, Optional, Sequence, Union

import seqio
import tensorflow as tf

from dsbs_jax.data import schema, tfrecords

# SeqIO split -> the split name our adapters write.
DEFAULT_SPLIT_MAP: Mapping[str, str] = {"train": "train", "validation": "valid", "test": "test"}
FULL = 100.0


def fraction_rank_key(example_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{example_id}".encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=64)
def fraction_ids(dataset_dir: str, split: str, fraction: float, seed: int) -> frozenset:
    """Ids kept by a `fraction` (percent) of a split: the ceil(f·N) ids with the lowest seeded hash.

    Ranking once by a seeded hash makes subsets nested (12.5 % ⊂ 25 % ⊂ …) and identical across
    methods and label sources for one seed, so comparisons between methods are fair.
    """
    if not 0 < fraction <= FULL:
        raise ValueError(f"Data fraction must be in (0, 100] percent, found {fraction}.")
    ids = [example.id for example in tfrecords.read_split(dataset_dir, split)]
    keep = math.ceil(len(ids) * fraction / FULL)
    return frozenset(sorted(ids, key=lambda i: fraction_rank_key(i, seed))[:keep])


def _parse(serialized: tf.Tensor, is_train: bool) -> dict:
    parsed = tf.io.parse_single_example(serialized, schema.tf_feature_description())
    for key in ("choices", "rationales"):
        parsed[key] = tf.sparse.to_dense(parsed[key], default_value="")
    parsed["has_rationale"] = tf.cast(tf.size(parsed["rationales"]) > 0, tf.int64)
    parsed["rationale"] = tf.concat([parsed["rationales"], [""]], axis=0)[0]
    parsed["is_train"] = tf.constant(is_train)
    return parsed


def _dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = 0, *, split_dirs: Mapping[str, str],
                split_map: Mapping[str, str], fraction: float, fraction_seed: int) -> tf.data.Dataset:
    our_split = split_map[split]
    dataset_dir = split_dirs[split]
    files = tfrecords.split_files(dataset_dir, our_split)
    files_ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        files_ds = files_ds.shuffle(len(files), seed=seed)
    ds = files_ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    is_train = split == "train"
    ds = ds.map(functools.partial(_parse, is_train=is_train), num_parallel_calls=tf.data.AUTOTUNE)
    if is_train and fraction < FULL:
        kept = sorted(fraction_ids(dataset_dir, our_split, fraction, fraction_seed))
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(kept, tf.string), tf.ones(len(kept), tf.int64)),
            default_value=0)
        ds = ds.filter(lambda ex: table.lookup(ex["id"]) > 0)
    return ds


def make_source(dataset_dir: Union[str, Sequence[str]], split_map: Mapping[str, str], fraction: float = FULL,
                fraction_seed: int = 0) -> seqio.FunctionDataSource:
    """A SeqIO source for the SeqIO splits whose mapped split a manifest has.

    `dataset_dir` may be several directories of one dataset: each split is read from the first
    whose manifest has it.
    """
    dirs = (dataset_dir,) if isinstance(dataset_dir, str) else tuple(dataset_dir)
    present_by_dir = [(d, tfrecords.read_manifest(d).get("splits", {})) for d in dirs]
    split_dirs, entries = {}, {}
    for seqio_split, ours in split_map.items():
        for directory, present in present_by_dir:
            if ours in present:
                split_dirs[seqio_split], entries[seqio_split] = directory, present[ours]
                break
    splits = list(split_dirs)
    if not splits:
        found = sorted({s for _, present in present_by_dir for s in present})
        raise ValueError(f"{' and '.join(f'{d}/manifest.json' for d in dirs)} {'has' if len(dirs) == 1 else 'have'} "
                         f"splits {found}, none of the mapped {dict(split_map)}; pass split_map "
                         "(e.g. {'train': 'valid', 'test': 'test'}).")
    num_input_examples = {s: entries[s].get("num_examples") for s in splits}
    if fraction < FULL and "train" in num_input_examples and num_input_examples["train"] is not None:
        num_input_examples["train"] = math.ceil(num_input_examples["train"] * fraction / FULL)
    return seqio.FunctionDataSource(
        functools.partial(_dataset_fn, split_dirs=split_dirs, split_map=dict(split_map), fraction=fraction,
                          fraction_seed=fraction_seed),
        splits=splits, num_input_examples=num_input_examples)
