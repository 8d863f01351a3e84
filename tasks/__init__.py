"""SeqIO tasks and mixtures for Distilling step-by-step, registered at import.

    DSBS_DATA_ROOT=gs://bucket/dsbs_data python -m t5x.train \
        --gin_file=gin/t5x/experiments/cqa_dsbs_base.gin ...   # gin does `import tasks`

Importing this package registers, for every dataset directory under `$DSBS_DATA_ROOT` (a
comma-separated list of roots is allowed; each dataset is a `{root}/{dataset}/manifest.json`
directory written by `dsbs import` or `dsbs rationales`), every task that a method of
`dsbs_jax/methods.py` trains or is scored on (`tasks/registry.py`): `{D}_standard_{gold,llm}`,
`{D}_paired_{gold,llm}`, `{D}_label_gold`, `{D}_rationale`, the mixture `{D}_dsbs_gold` and
`{D}_single_gold`, with `_frac{f}` suffixes for the data fractions. The vocabulary is
`$DSBS_SPM_PATH`, else the dataset's own (`dsbs import --train_vocab N`, recorded in its manifest),
else T5's public one.

Per-dataset options live in an optional `tasks.json` beside the manifest, e.g. for the e-SNLI
release, which has no train file:

    {"split_map": {"train": "valid", "test": "test"}, "fractions": [12.5, 25, 50, 100],
     "label_sources": ["gold", "llm"], "fraction_seed": 0, "drop_incomplete": false}

Prefixes, mixture rates and losses are not options here: they belong to the methods.

Without `$DSBS_DATA_ROOT` nothing is registered. Importing again (T5X imports task modules more
than once) registers nothing new; a different definition under an existing name is an error.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

from tasks.registry import (DEFAULT_FRACTIONS, LABEL_SOURCES, TASK_VERSION, TaskOptions, fraction_suffix,  # noqa: F401
                            register_dataset_tasks, remove_dataset_tasks, task_name)
from tasks.vocab import SPM_PATH_ENV, dataset_vocabulary_path, get_vocabulary

DATA_ROOT_ENV = "DSBS_DATA_ROOT"
OPTIONS_FILE = "tasks.json"


def register_data_root(root: str, vocabulary=None) -> list[str]:
    """Registers the task family of every `{root}/{dataset}/manifest.json`; returns the names."""
    import tensorflow as tf

    from dsbs_jax.data import tfrecords

    if not tf.io.gfile.isdir(root):
        raise FileNotFoundError(f"{DATA_ROOT_ENV} entry {root!r} is not a directory; point it at the --out "
                                "directory of `dsbs import` / `dsbs rationales`.")
    shared = vocabulary or (get_vocabulary() if os.environ.get(SPM_PATH_ENV) else None)
    names: list[str] = []
    for entry in sorted(tf.io.gfile.listdir(root)):
        dataset = entry.rstrip("/")
        dataset_dir = os.path.join(root, dataset)
        if not tf.io.gfile.exists(os.path.join(dataset_dir, tfrecords.MANIFEST)):
            continue
        settings = _read_options(dataset_dir)
        manifest = tfrecords.read_manifest(dataset_dir)
        vocabulary = shared or get_vocabulary(dataset_vocabulary_path(dataset_dir, manifest))
        with_rationales = any(split.get("num_with_rationale", 0) > 0 for split in manifest.get("splits", {}).values())
        names += register_dataset_tasks(
            dataset, dataset_dir, vocabulary=vocabulary,
            label_sources=settings.pop("label_sources", LABEL_SOURCES),
            fractions=settings.pop("fractions", DEFAULT_FRACTIONS),
            split_map=settings.pop("split_map", None), metric=settings.pop("metric", None),
            options=TaskOptions(**settings), with_rationales=with_rationales)
    return names


def _read_options(dataset_dir: str) -> dict:
    import tensorflow as tf

    path = os.path.join(dataset_dir, OPTIONS_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        try:
            settings = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: invalid JSON ({error.msg}).") from None
    allowed = {"split_map", "fractions", "label_sources", "metric"} | set(TaskOptions.__dataclass_fields__)
    unknown = sorted(set(settings) - allowed)
    if unknown:
        owned = sorted(set(unknown) & {"label_prefix", "rationale_prefix", "alpha"})
        hint = (f" {owned} belong to the methods (dsbs_jax/methods.py), so that training, evaluation and "
                "`dsbs predict` agree: add a method instead." if owned else "")
        raise ValueError(f"{path}: unknown field(s) {unknown}; allowed: {sorted(allowed)}.{hint}")
    return settings


def _register_from_environment(roots: Optional[str]) -> None:
    if not roots:
        logging.info("tasks: $%s is not set; no dsbs-jax tasks registered. Set it to the output directory "
                     "of `dsbs import` or `dsbs rationales`.", DATA_ROOT_ENV)
        return
    for root in filter(None, (r.strip() for r in roots.split(","))):
        register_data_root(root)


_register_from_environment(os.environ.get(DATA_ROOT_ENV))
