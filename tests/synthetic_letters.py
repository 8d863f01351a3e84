"""A small synthetic dataset for trainer tests: find the one letter among digits.

    x = "4 k 9 1"   label = "k"   rationale = "the letter among 4 k 9 1 is k"

Eight letters (chance 12.5 %); the answer is found by content, which T5's position-free
cross-attention learns in a few hundred tiny-model steps. Written as real TFRecords with a
manifest (`dsbs_jax.data.tfrecords.write_split`) and registered through the `tasks` package, so
trainer tests go through the same SeqIO path as real data.
"""
from __future__ import annotations

import os
import pathlib
import random
from typing import List

from dsbs_jax.data import schema, specs, tfrecords

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


def register_spec() -> None:
    """The dataset's spec (label set, exact-match accuracy) for code that looks datasets up by name."""
    from dsbs_jax.data import parsers

    specs.register_spec(specs.DatasetSpec(
        name=DATASET, format_input=lambda raw: raw["input"], gold_label=lambda raw: raw.get("label"),
        parser=parsers.TeacherParser(("Q:",), "So the answer is", "label", tuple(LETTERS)),
        label_set=tuple(LETTERS), metric="accuracy"), overwrite=True)


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


def register_tasks(dataset_dir: os.PathLike, spm_path: str) -> None:
    """Registers `letters_{label_gold, rationale, dsbs_gold, paired_gold}` over the TFRecords.

    Stand-in for `tasks.register_dataset_tasks` with the same names and features (`predict: `/
    `explain: ` prefixes, exact-match accuracy on gold labels), built from real SeqIO parts.
    """
    import functools

    import seqio
    import tensorflow as tf

    dataset_dir = pathlib.Path(dataset_dir)
    manifest = tfrecords.read_manifest(str(dataset_dir))
    files = {split: [str(dataset_dir / f) for f in entry["files"]] for split, entry in manifest["splits"].items()}
    source = seqio.TFExampleDataSource(
        split_to_filepattern={"train": files["train"], "validation": files["valid"], "test": files["test"]},
        feature_description=schema.tf_feature_description())
    vocab = seqio.SentencePieceVocabulary(spm_path)

    def to_text(ex, kind):
        rationale = tf.sparse.to_dense(ex["rationales"])[0] if kind != "label" else None
        label = {"inputs": tf.strings.join(["predict: ", ex["input"]]), "targets": ex["label"]}
        explain = {"inputs": tf.strings.join(["explain: ", ex["input"]]), "targets": rationale}
        if kind == "label":
            return label
        if kind == "rationale":
            return explain
        return {**label, "rationale_inputs": explain["inputs"], "rationale_targets": explain["targets"]}

    def accuracy(targets, predictions):
        return {"accuracy": 100.0 * sum(t == p for t, p in zip(targets, predictions)) / max(len(targets), 1)}

    names = {"label": "letters_label_gold", "rationale": "letters_rationale", "paired": "letters_paired_gold"}
    for kind, name in names.items():
        keys = ("inputs", "targets") + (("rationale_inputs", "rationale_targets") if kind == "paired" else ())
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name, source,
            preprocessors=[lambda ds, k=kind: ds.map(functools.partial(to_text, kind=k)),
                           seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
            output_features={k: seqio.Feature(vocab, add_eos=True) for k in keys},
            metric_fns=[accuracy] if kind == "label" else [])
    if "letters_dsbs_gold" in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove("letters_dsbs_gold")
    seqio.MixtureRegistry.add("letters_dsbs_gold", ["letters_label_gold", "letters_rationale"], default_rate=1.0)


def prepare(root: os.PathLike, spm_path: str) -> pathlib.Path:
    """Writes the data (once) and registers the tasks; returns the dataset dir."""
    register_spec()
    dataset_dir = write_dataset(root)
    register_tasks(dataset_dir, spm_path)
    return dataset_dir


# `MIXTURE_OR_TASK_MODULE=synthetic_letters` in a `dsbs train` subprocess registers the tasks at
# import, the way the `tasks` package registers every dataset under $DSBS_DATA_ROOT.
if os.environ.get("LETTERS_ROOT") and os.environ.get("LETTERS_SPM"):
    prepare(os.environ["LETTERS_ROOT"], os.environ["LETTERS_SPM"])
