"""Your own dataset on the first try: what `dsbs import` and `import tasks` decide without being asked.

* a validation split is held out of train (the reference's `train_test_split(0.1, seed=0)`);
* numeric labels are kept as text, and the import says so;
* `_llm` tasks exist only where the data holds teacher labels;
* `DSBS_DATA_ROOT=teacher_root,import_root` is one dataset: each split from the first root holding it.
"""
from __future__ import annotations

import json

import pytest
import seqio

from dsbs_jax.data import import_cli, schema, splits, tfrecords


def _write(path, n: int):
    path.write_text("".join(json.dumps({"question": f"What is {i} plus 1?", "answer": i + 1}) + "\n"
                            for i in range(n)))
    return path


def _import(src, out, *extra: str) -> int:
    return import_cli.main(["--format", "jsonl", "--dataset", "sums", "--src", str(src), "--out", str(out),
                            "--template", "{question}", "--label_field", "answer", *extra])


def test_import_holds_out_the_reference_validation_split_and_names_numeric_labels(tmp_path, capsys):
    src = _write(tmp_path / "sums.jsonl", 60)
    assert _import(src, tmp_path / "data") == 0
    printed = capsys.readouterr().out
    data = str(tmp_path / "data" / "sums")
    train, valid = list(tfrecords.read_split(data, "train")), list(tfrecords.read_split(data, "valid"))
    everything = [f"sums-train-{line}" for line in range(1, 61)]
    kept, held = splits.holdout(everything, test_size=0.1, seed=0)
    assert [e.id for e in train] == kept and [e.id for e in valid] == held and len(held) == 6
    assert {e.split for e in valid} == {"valid"}
    assert "held out 6 of 60 train examples as 'valid' (10%, seed 0" in printed and "--holdout 0" in printed
    assert ("note: 60 labels of field 'answer' are JSON numbers (e.g. 1); they are stored, learned and predicted "
            "as text ('1')") in printed
    assert train[0].label == str(int(train[0].input.split()[2]) + 1)  # text, as printed

    assert _import(src, tmp_path / "whole", "--holdout", "0") == 0
    manifest = tfrecords.read_manifest(str(tmp_path / "whole" / "sums"))
    assert {k: v["num_examples"] for k, v in manifest["splits"].items()} == {"train": 60}
    assert "held out" not in capsys.readouterr().out


def test_a_file_too_small_to_hold_out_from_names_the_flag(tmp_path, capsys):
    src = _write(tmp_path / "one.jsonl", 1)
    assert _import(src, tmp_path / "data") == 1
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # (tqdm's bar aside)
    assert error == ["dsbs import: error: one.jsonl: Cannot hold out 0.1 of 1 rows: both parts must be non-empty "
                     "(fix: --holdout 0 keeps every row in train)"]
    assert not (tmp_path / "data" / "sums").exists()


def _example(i: int, split: str, teacher: bool) -> schema.Example:
    return schema.Example(id=f"{split}-{i}", dataset="overlay", split=split, input=f"q{i}", label=f"a{i}",
                          teacher_label=f"a{i}" if teacher else None,
                          rationales=(f"because {i}",) if teacher else ())


@pytest.fixture
def registered():
    import tasks

    tasks.remove_dataset_tasks("overlay")
    yield tasks
    tasks.remove_dataset_tasks("overlay")


def test_roots_overlay_and_llm_tasks_need_teacher_labels(tmp_path, spm_model, registered, monkeypatch):
    tasks = registered
    monkeypatch.delenv("DSBS_SPM_PATH", raising=False)
    imported, teacher = tmp_path / "data" / "overlay", tmp_path / "data_llm" / "overlay"
    for split, n in (("train", 8), ("valid", 3), ("test", 2)):
        tfrecords.write_split(str(imported), split, [_example(i, split, teacher=False) for i in range(n)])
    manifest = tfrecords.read_manifest(str(imported))
    manifest["vocabulary"] = {"path": "spm.model", "vocab_size": 512}  # as `dsbs import --train_vocab` records it
    tfrecords._write_manifest(str(imported / tfrecords.MANIFEST), manifest)
    (imported / "spm.model").write_bytes(open(spm_model, "rb").read())

    # The import alone: gold tasks only (no teacher labels, so no `_llm` task that could not train).
    names = tasks.register_data_roots([str(tmp_path / "data")])
    assert "overlay_standard_gold" in names and not [n for n in names if "_llm" in n]
    tasks.remove_dataset_tasks("overlay")

    # The teacher's train split in front of the import: train from data_llm, valid and test from data.
    tfrecords.write_split(str(teacher), "train", [_example(i, "train", teacher=True) for i in range(5)])
    names = tasks.register_data_roots([str(tmp_path / "data_llm"), str(tmp_path / "data")])
    assert "overlay_paired_llm" in names and "overlay_paired_gold" in names
    task = seqio.get_mixture_or_task("overlay_paired_llm")
    assert task.output_features["targets"].vocabulary.sentencepiece_model_file == str(imported / "spm.model")
    count = {s: sum(1 for _ in task.get_dataset(None, split=s, shuffle=False)) for s in ("train", "validation", "test")}
    assert count == {"train": 5, "validation": 3, "test": 2}
    rationale = next(task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator())
    assert rationale["rationale_targets_pretokenized"].decode().startswith("because")


def test_reimporting_train_without_train_vocab_returns_to_t5s_vocabulary(tmp_path, capsys):
    """The error for a pretrained run with a dataset vocabulary says "import without --train_vocab":
    that must work without --overwrite, and leave no stale model behind."""
    src = _write(tmp_path / "sums.jsonl", 60)
    assert _import(src, tmp_path / "data", "--train_vocab", "300") == 0
    record = tfrecords.read_manifest(str(tmp_path / "data" / "sums"))["vocabulary"]
    capsys.readouterr()
    assert _import(src, tmp_path / "data") == 0
    assert "vocabulary" not in tfrecords.read_manifest(str(tmp_path / "data" / "sums"))
    assert not (tmp_path / "data" / "sums" / record["path"]).exists()
    assert (f"vocabulary: dropped {tmp_path}/data/sums/{record['path']}, trained on the train split this import "
            "replaced; the tasks now use T5's") in capsys.readouterr().out
