"""A small synthetic dataset for trainer tests: find the one letter among digits.

    x = "4 k 9 1"   label = "k"   rationale = "the letter among 4 k 9 1 is k"

Eight letters (chance 12.5 %); the answer is found by content, which T5's position-free
cross-attention learns in about a hundred tiny-model steps. Written as real TFRecords with a
manifest (`dsbs_jax.data.tfrecords.write_split`) and registered through the `tasks` package, so
trainer tests go through the same SeqIO path as real data.
"""
from __future__ import annotations

import os
import pathlib
import random
from typing import List

from dsbs_jax.data import schema, tfrecords

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASET = "letters"
LETTERS = "bdfhkmpt"
SPLIT_SIZES = {"train": 1200, "valid": 64, "test": 64}


def make_examples(split: str, n: int, seed: int) -> List[schema.Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        digits = [str(rng.randrange(10)) for _ in range(rng.randint(2, 4))]
        letter = rng.choice(LETTERS)
        digits.insert(rng.randrange(len(digits) + 1), letter)
        x = " ".join(digits)
        out.append(schema.Example(
            id=f"{split}-{i}", dataset=DATASET, split=split, input=x, label=letter, teacher_label=letter,
            rationales=(f"the letter among {x} is {letter}",), teacher_meta={"synthetic": True}))
    return out


def write_dataset(root: os.PathLike) -> pathlib.Path:
    """Writes train/valid/test TFRecords under `{root}/letters`; returns that directory."""
    dataset_dir = pathlib.Path(root) / DATASET
    if (dataset_dir / "manifest.json").exists():
        return dataset_dir
    for seed, (split, n) in enumerate(SPLIT_SIZES.items()):
        tfrecords.write_split(str(dataset_dir), split, make_examples(split, n, seed), num_shards=2)
    return dataset_dir


def vocab_texts() -> List[str]:
    """Text covering every piece the dataset uses (for a small SentencePiece model)."""
    texts = [e.input + " " + e.label + " " + e.rationales[0] for e in make_examples("train", 300, 99)]
    return texts + ["predict: explain: " + " ".join(LETTERS + "0123456789")] * 20


def prepare(root: os.PathLike, spm_path: str) -> pathlib.Path:
    """Writes the data (once) and registers its task family with `tasks.register_dataset_tasks`.

    Names: `letters_{label,standard,single,paired}_gold`, `letters_rationale`, `letters_dsbs_gold`
    (the same family `import tasks` registers with `DSBS_DATA_ROOT=root DSBS_SPM_PATH=spm_path`).
    """
    import tasks

    dataset_dir = write_dataset(root)
    tasks.remove_dataset_tasks(DATASET)  # another test module may have registered another root
    tasks.register_dataset_tasks(DATASET, str(dataset_dir), vocabulary=tasks.get_vocabulary(spm_path))
    return dataset_dir


TRAIN_STEPS = 6


def train_flags(model_dir: os.PathLike, *extra: str) -> List[str]:
    """`dsbs train` flags of a tiny run on the letters data: the dsbs method, 6 steps, checkpoints at 3 and 6.

    The session's `letters_run` fixture (tests/conftest.py) is this run; `extra` flags come last and win.
    """
    return ["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", "--gin.MIXTURE_OR_TASK_MODULE=tasks",
            "--gin.METHOD=dsbs", "--gin.DATASET=letters", "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 24}",
            f"--gin.TRAIN_STEPS={TRAIN_STEPS}", f"--gin.MODEL_DIR={model_dir}", "--gin.BATCH_SIZE=8",
            "--gin.VOCAB_SIZE=128", "--gin.EVAL_SPLIT='test'", "--gin.CHECKPOINT_PERIOD=3", *extra]


def dsbs_env(data_root: os.PathLike, spm_path: str, **extra: str) -> dict:
    """The environment of a `dsbs` subprocess over `data_root`: what a user exports for `import tasks`."""
    return {**os.environ, "DSBS_DATA_ROOT": str(data_root), "DSBS_SPM_PATH": spm_path,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}
