"""Sharded TFRecord writer/reader and manifest: round trips, atomicity, checksums, gfile paths."""
import json
import os

import pytest

from dsbs_jax.data import schema, tfrecords
from dsbs_jax.data.errors import DataError


def _examples(n, split="train"):
    out = []
    for i in range(n):
        failed = i % 4 == 3
        out.append(schema.Example(
            id=f"ex-{i}", dataset="toy", split=split, input=f"question {i}</s>ünïcode",
            label=None if i == 5 else ("yes" if i % 2 else "no"),
            choices=("yes", "no") if i % 3 == 0 else (),
            teacher_label=None if failed else ("yes" if i % 3 else "no"),
            rationales=() if failed else (f"because {i}", "second rationale"),
            teacher_meta={"parse_failure": "no_answer" if failed else None, "parse_notes": [],
                          "raw_label": None if failed else ("yes" if i % 3 else "no")}))
    return out


def test_round_trip_sharding_and_manifest(tmp_path):
    examples = _examples(10)
    entry = tfrecords.write_split(str(tmp_path / "toy"), "train", examples, num_shards=3,
                                  manifest_extra={"teacher": {"model": "m"}}, split_extra={"note": "x"})
    names = [f"train.tfrecord-{i:05d}-of-00003" for i in range(3)]
    assert sorted(os.listdir(tmp_path / "toy")) == sorted(names + ["manifest.json"])
    assert tfrecords.split_files(str(tmp_path / "toy"), "train") == [str(tmp_path / "toy" / n) for n in names]
    back = list(tfrecords.read_split(str(tmp_path / "toy"), "train", verify=True))
    assert sorted(back, key=lambda e: e.id) == sorted(examples, key=lambda e: e.id)  # every field survives
    manifest = tfrecords.read_manifest(str(tmp_path / "toy"))
    assert manifest["schema_version"] == schema.SCHEMA_VERSION and manifest["dataset"] == "toy"
    assert manifest["teacher"] == {"model": "m"} and manifest["splits"]["train"] == entry
    assert entry["num_examples"] == 10 and entry["note"] == "x"
    assert entry["parse_failures"] == {"no_answer": 2}  # ids 3 and 7
    assert entry["parse_rate"] == pytest.approx(0.8)
    # Agreement is over the examples that went through the teacher and have a gold label (9 of 10).
    expected = sum(e.teacher_label == e.label for e in examples if e.label is not None) / 9
    assert entry["teacher_gold_agreement"] == pytest.approx(expected, abs=1e-6)
    for name in names:
        assert entry["sha256"][name] == tfrecords.sha256_file(str(tmp_path / "toy" / name))


def test_second_split_and_rewrite_with_fewer_shards(tmp_path):
    root = str(tmp_path / "toy")
    tfrecords.write_split(root, "train", _examples(8), num_shards=4)
    tfrecords.write_split(root, "test", _examples(3, "test"), num_shards=1)
    tfrecords.write_split(root, "train", _examples(5), num_shards=2)
    files = sorted(os.listdir(root))
    assert files == ["manifest.json", "test.tfrecord-00000-of-00001",
                     "train.tfrecord-00000-of-00002", "train.tfrecord-00001-of-00002"]
    manifest = tfrecords.read_manifest(root)
    assert {s: e["num_examples"] for s, e in manifest["splits"].items()} == {"test": 3, "train": 5}
    assert len(list(tfrecords.read_split(root, "test"))) == 3


def test_failure_mid_write_leaves_previous_output_untouched(tmp_path):
    root = str(tmp_path / "toy")
    tfrecords.write_split(root, "train", _examples(6), num_shards=2)
    before = {name: (tmp_path / "toy" / name).read_bytes() for name in os.listdir(root)}

    def broken():
        yield from _examples(4)
        raise DataError("data.jsonl", 5, "label", "expected a string, found int 3")

    with pytest.raises(DataError, match="data.jsonl:5"):
        tfrecords.write_split(root, "train", broken(), num_shards=3)
    after = {name: (tmp_path / "toy" / name).read_bytes() for name in os.listdir(root)}
    assert after == before  # no *.tmp left, old shards and manifest byte-identical


def test_duplicate_ids_rejected_and_nothing_written(tmp_path):
    examples = _examples(3) + [_examples(2)[1]]
    with pytest.raises(DataError, match="duplicate id 'ex-1'"):
        tfrecords.write_split(str(tmp_path / "toy"), "train", examples)
    assert os.listdir(tmp_path / "toy") == []


def test_verify_detects_changed_and_missing_shards(tmp_path):
    root = str(tmp_path / "toy")
    tfrecords.write_split(root, "train", _examples(6), num_shards=2)
    shard = tmp_path / "toy" / "train.tfrecord-00001-of-00002"
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")
    with pytest.raises(DataError, match="train.tfrecord-00001-of-00002: unreadable shard"):
        list(tfrecords.read_split(root, "train", verify=False))  # TFRecord's own CRC catches it too
    with pytest.raises(DataError, match="train.tfrecord-00001-of-00002: sha256 expected"):
        list(tfrecords.read_split(root, "train", verify=True))
    shard.unlink()
    with pytest.raises(DataError, match="missing"):
        tfrecords.verify_split(root, "train")


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="No manifest.json"):
        tfrecords.read_manifest(str(tmp_path))
    tfrecords.write_split(str(tmp_path), "train", _examples(2))
    with pytest.raises(KeyError, match=r"Split 'valid' is not in .*it has \['train'\]"):
        tfrecords.split_files(str(tmp_path), "valid")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["schema_version"] = schema.SCHEMA_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="newer than this code"):
        tfrecords.read_manifest(str(tmp_path))


def test_non_local_filesystem_through_gfile():
    """`ram://` is a TensorFlow filesystem like `gs://`: every path goes through tf.io.gfile."""
    import tensorflow as tf

    root = "ram://dsbs-test-bucket/data/toy"
    tfrecords.write_split(root, "train", _examples(5), num_shards=2)
    assert sorted(tf.io.gfile.listdir(root)) == ["manifest.json", "train.tfrecord-00000-of-00002",
                                                  "train.tfrecord-00001-of-00002"]
    assert [e.id for e in tfrecords.read_split(root, "train", verify=True)] == ["ex-0", "ex-2", "ex-4", "ex-1", "ex-3"]


def test_publish_staged_moves_splits_and_keeps_others(tmp_path):
    final, staging = str(tmp_path / "toy"), str(tmp_path / ".toy.staging")
    tfrecords.write_split(final, "valid", _examples(2, "valid"))
    tfrecords.write_split(final, "train", _examples(9), num_shards=3)
    tfrecords.write_split(staging, "train", _examples(4), num_shards=1, manifest_extra={"source": "s"})
    manifest = tfrecords.publish_staged(staging, final)
    assert not os.path.exists(staging)
    assert sorted(os.listdir(final)) == ["manifest.json", "train.tfrecord-00000-of-00001",
                                         "valid.tfrecord-00000-of-00001"]
    assert manifest["source"] == "s" and manifest == tfrecords.read_manifest(final)
    assert len(list(tfrecords.read_split(final, "train", verify=True))) == 4
    assert len(list(tfrecords.read_split(final, "valid", verify=True))) == 2
