"""`dsbs import --train_vocab N`: a dataset's own SentencePiece model, so the pipeline runs offline."""
from __future__ import annotations

import json

import seqio

from dsbs_jax.data import import_cli, tfrecords


def _write_jsonl(path, n=60):
    words = ["apple", "river", "stone", "cloud", "lamp", "tiger", "violin", "garden"]
    with open(path, "w") as f:
        for i in range(n):
            q = f"Which word follows {words[i % 8]} in the list {' '.join(words)}?"
            f.write(json.dumps({"question": q, "answer": words[(i + 1) % 8]}) + "\n")


def test_import_trains_and_records_a_vocabulary_that_tasks_use(tmp_path, monkeypatch, capsys):
    _write_jsonl(tmp_path / "train.jsonl")
    _write_jsonl(tmp_path / "test.jsonl", 10)
    out = tmp_path / "data"
    rc = import_cli.main(["--format", "jsonl", "--dataset", "toyvocab", "--src", str(tmp_path), "--out", str(out),
                          "--splits", "train", "test", "--input_fields", "question", "--label_field", "answer",
                          "--train_vocab", "32000"])
    assert rc == 0
    manifest = tfrecords.read_manifest(str(out / "toyvocab"))
    record = manifest["vocabulary"]
    # Named by what it holds: 60 short questions cannot make 32000 pieces, and the import says so.
    pieces = record["vocab_size"]
    assert record["path"] == f"vocab/spm_{pieces}.model" and record["trained_on"] == ["train"]
    assert record["requested_vocab_size"] == 32000 and 256 < pieces < 400  # 256 byte pieces + the text's
    assert (out / "toyvocab" / record["path"]).is_file() and not (out / "toyvocab" / "vocab" / "spm_32000.model").exists()
    printed = capsys.readouterr().out
    assert (f"vocabulary: {out}/toyvocab/vocab/spm_{pieces}.model, {pieces} pieces (--train_vocab 32000 asked for "
            "more than the train split's text yields)") in printed
    assert not list(out.glob(".toyvocab.staging-*"))

    import tasks

    monkeypatch.delenv("DSBS_SPM_PATH", raising=False)
    tasks.remove_dataset_tasks("toyvocab")
    try:
        assert "toyvocab_standard_gold" in tasks.register_data_root(str(out))
        task = seqio.get_mixture_or_task("toyvocab_standard_gold")
        vocab = task.output_features["targets"].vocabulary
        assert vocab.sentencepiece_model_file == str(out / "toyvocab" / record["path"])
        example = next(task.get_dataset(split="train", shuffle=False).as_numpy_iterator())
        assert vocab.decode(example["targets"].tolist()) in {"apple", "river", "stone", "cloud", "lamp", "tiger",
                                                              "violin", "garden"}
        # Byte fallback: text the import never saw (a teacher's "+", an accent) is spelled, not <unk>.
        unseen = "7 + 7 = 14, café"
        assert 2 not in vocab.encode(unseen) and vocab.decode(vocab.encode(unseen)) == unseen
        # $DSBS_SPM_PATH still wins over the recorded model.
        tasks.remove_dataset_tasks("toyvocab")
        monkeypatch.setenv("DSBS_SPM_PATH", str(out / "toyvocab" / record["path"]) + ".other")
        tasks.register_data_root(str(out))
        vocab = seqio.get_mixture_or_task("toyvocab_standard_gold").output_features["targets"].vocabulary
        assert vocab.sentencepiece_model_file.endswith(".other")
    finally:
        tasks.remove_dataset_tasks("toyvocab")


def test_import_without_train_vocab_records_none(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", 5)
    rc = import_cli.main(["--format", "jsonl", "--dataset", "novocab", "--src", str(tmp_path / "train.jsonl"),
                          "--out", str(tmp_path / "data"), "--input_fields", "question", "--label_field", "answer"])
    assert rc == 0 and "vocabulary" not in tfrecords.read_manifest(str(tmp_path / "data" / "novocab"))
