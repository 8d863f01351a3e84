"""SeqIO tasks and mixtures for Distilling step-by-step, registered at import.

    DSBS_DATA_ROOT=gs://bucket/dsbs_data python -m t5x.train \
        --gin_file=gin/t5x/experiments/cqa_dsbs_base.gin ...   # gin does `import tasks`

Importing this package registers, for every dataset directory under `$DSBS_DATA_ROOT` (each
dataset is a `{root}/{dataset}/manifest.json` directory written by `dsbs import` or `dsbs
rationales`), every task that a method of `dsbs_jax/methods.py` trains or is scored on
(`tasks/registry.py`): `{D}_standard_gold`, `{D}_paired_gold`, `{D}_label_gold`, `{D}_rationale`,
the mixture `{D}_dsbs_gold` and `{D}_single_gold`, with `_frac{f}` suffixes for the data
fractions, and the `_llm` variants when the data holds teacher labels.

`$DSBS_DATA_ROOT` may list several roots, comma-separated. A dataset found in more than one is one
dataset: each split comes from the first root that has it. So the teacher's output and your
import combine without copying:

    DSBS_DATA_ROOT=data_llm,data    # train (with rationales) from data_llm/mine, valid and test from data/mine

The vocabulary is `$DSBS_SPM_PATH`, else the dataset's own (`dsbs import --train_vocab N`, recorded
in the manifest of the first root that has one), else T5's public one.

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
from typing import Optional, Sequence

from tasks.registry import (DEFAULT_FRACTIONS, LABEL_SOURCES, TASK_VERSION, TaskOptions, fraction_suffix,  # noqa: F401
                            register_dataset_tasks, remove_dataset_tasks, task_name)
from tasks.vocab import SPM_PATH_ENV, dataset_vocabulary, get_vocabulary

DATA_ROOT_ENV = "DSBS_DATA_ROOT"
OPTIONS_FILE = "tasks.json"


def register_data_root(root: str, vocabulary=None) -> list[str]:
    """Registers the task family of every `{root}/{dataset}/manifest.json`; returns the names."""
    return register_data_roots([root], vocabulary)


def register_data_roots(roots: Sequence[str], vocabulary=None) -> list[str]:
    """Registers every dataset of `roots`; a dataset in several roots takes each split from the first.

    Returns the registered task and mixture names.
    """
    import tensorflow as tf

    from dsbs_jax.data import tfrecords

    found: dict[str, list[str]] = {}  # dataset -> its directories, in root order
    for root in roots:
        if not tf.io.gfile.isdir(root):
            raise FileNotFoundError(f"{DATA_ROOT_ENV} entry {root!r} is not a directory; point it at the --out "
                                    "directory of `dsbs import` / `dsbs rationales`.")
        for entry in sorted(tf.io.gfile.listdir(root)):
            dataset_dir = os.path.join(root, entry.rstrip("/"))
            if tf.io.gfile.exists(os.path.join(dataset_dir, tfrecords.MANIFEST)):
                found.setdefault(entry.rstrip("/"), []).append(dataset_dir)
    shared = vocabulary or (get_vocabulary() if os.environ.get(SPM_PATH_ENV) else None)
    names: list[str] = []
    for dataset, dirs in found.items():
        settings = _read_options(dirs[0])
        manifests = [tfrecords.read_manifest(d) for d in dirs]
        splits = [entry for m in manifests for entry in m.get("splits", {}).values()]
        with_rationales = any(entry.get("num_with_rationale", 0) > 0 for entry in splits)
        # `_llm` tasks train on teacher labels: registered only where some split holds them.
        with_teacher = any(entry.get("num_with_teacher_label", 0) > 0 for entry in splits)
        names += register_dataset_tasks(
            dataset, dirs[0] if len(dirs) == 1 else tuple(dirs), vocabulary=shared or _dataset_vocabulary(dirs, manifests),
            label_sources=settings.pop("label_sources", LABEL_SOURCES if with_teacher else ("gold",)),
            fractions=settings.pop("fractions", DEFAULT_FRACTIONS),
            split_map=settings.pop("split_map", None), metric=settings.pop("metric", None),
            options=TaskOptions(**settings), with_rationales=with_rationales)
    return names


def _dataset_vocabulary(dirs: Sequence[str], manifests: Sequence[dict]):
    """The model `dsbs import --train_vocab` recorded (first directory that has one), else T5's."""
    path, origin = dataset_vocabulary(dirs, manifests)
    return get_vocabulary(path, origin=origin)


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
    register_data_roots([r for r in (r.strip() for r in roots.split(",")) if r])


_register_from_environment(os.environ.get(DATA_ROOT_ENV))
