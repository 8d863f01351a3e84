"""The rationale job end to end against a real local HTTP server: output, shards + merge, secrets."""
import json
import os
import pathlib
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from teacher_server import FaultPlan, ServerThread  # noqa: E402

from dsbs_jax.data import schema, tfrecords  # noqa: E402
from dsbs_jax.rationales import cli  # noqa: E402
from dsbs_jax.rationales.job import JobConfig, merge, run_job, shard_of  # noqa: E402

SECRET = "sk-test-SENTINEL-5b1f0e"
N = 24


def _all_text(root: pathlib.Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_job_writes_tfrecords_and_manifest_and_never_the_key(release_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSBS_TEST_KEY", SECRET)
    with ServerThread(FaultPlan(delay_s=0.01)) as server:
        code = cli.main(["--dataset", "cqa", "--split", "test", "--src", str(release_dir), "--out", str(tmp_path),
                         "--base_url", server.url, "--model", "toy", "--limit", str(N), "--api_key_env", "DSBS_TEST_KEY",
                         "--api_style", "chat", "--no_progress"])
        assert code == 0
        assert server.plan.seen[0]["headers"]["Authorization"] == f"Bearer {SECRET}"  # the key was used...
        assert server.plan.seen[0]["path"] == "/v1/chat/completions"
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    assert SECRET not in _all_text(tmp_path)  # ...and written nowhere
    manifest = tfrecords.read_manifest(str(tmp_path / "cqa"))
    entry = manifest["splits"]["test"]
    assert entry["num_examples"] == N and entry["parse_rate"] == 1.0 and entry["requests"] == N
    assert manifest["teacher"]["api_key"] == "set" and len(manifest["prompt_sha256"]) == 64
    examples = list(tfrecords.read_split(str(tmp_path / "cqa"), "test", verify=True))
    assert len({e.id for e in examples}) == N
    for example in examples:
        assert example.teacher_label == example.choices[0]  # the server names the first choice
        assert example.rationale.startswith("The question asks about") and "Q:" not in example.rationale


def test_shards_partition_ids_and_merge_checks_coverage(release_dir, tmp_path):
    with ServerThread(FaultPlan()) as server:
        common = dict(dataset="cqa", split="test", out=str(tmp_path), src=str(release_dir), base_url=server.url,
                      model="toy", limit=N, progress=False)
        pieces = [run_job(JobConfig(**common, num_shards=3, shard_index=i)) for i in range(3)]
    assert sorted(i for p in pieces for i in p["assigned_ids"]) == sorted(
        {i for p in pieces for i in p["assigned_ids"]})
    assert all(shard_of(i, 3) == p["shard_index"] for p in pieces for i in p["assigned_ids"])
    manifest = merge(str(tmp_path), "cqa", "test", 3)
    assert manifest["splits"]["test"]["num_examples"] == N
    assert manifest["splits"]["test"]["files"] == [f"test.tfrecord-0000{i}-of-00003" for i in range(3)]
    os.remove(tmp_path / "cqa" / "_work" / "test.shard-00001-of-00003" / "piece.json")
    with pytest.raises(FileNotFoundError, match="Shard 1 of 3 is not finished"):
        merge(str(tmp_path), "cqa", "test", 3)


def test_annotations_teacher_and_self_consistency(tmp_path):
    src = tmp_path / "src"
    examples = [schema.Example(id=f"q{i}", dataset="esnli", split="valid", input=f"A dog runs {i}.</s>An animal moves.",
                               label="entailment", rationales=(f"A dog is an animal {i}.",)) for i in range(10)]
    tfrecords.write_split(str(src / "esnli"), "valid", examples)
    manifest = run_job(JobConfig(dataset="esnli", split="valid", out=str(tmp_path / "out"), src=str(src / "esnli"),
                                 teacher="annotations", num_samples=3, progress=False))
    entry = manifest["splits"]["valid"]
    assert entry["num_examples"] == 10 and entry["teacher_gold_agreement"] == 1.0
    assert entry["self_consistency_unanimous"] == 10
    out = {e.id: e for e in tfrecords.read_split(str(tmp_path / "out" / "esnli"), "valid")}
    assert out["q3"].rationales == ("A dog is an animal 3.",) and out["q3"].teacher_meta["votes"] == 3


def test_resume_with_other_arguments_is_refused(release_dir, tmp_path):
    with ServerThread(FaultPlan()) as server:
        common = dict(dataset="cqa", split="test", out=str(tmp_path), src=str(release_dir), base_url=server.url,
                      model="toy", progress=False)
        run_job(JobConfig(**common, limit=4))
        with pytest.raises(ValueError, match="other arguments"):
            run_job(JobConfig(**common, limit=5, temperature=0.7))


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="--base_url and --model"):
        JobConfig(dataset="cqa", split="test", out="x")
    with pytest.raises(ValueError, match="--shard_index"):
        JobConfig(dataset="cqa", split="test", out="x", teacher="annotations", num_shards=2, shard_index=2)


def test_short_rationales_are_dropped_and_counted(tmp_path):
    src = tmp_path / "src"
    rationales = ["A dog is an animal.", "A:.", "So.", "Dogs are animals, and running is moving."]
    examples = [schema.Example(id=f"q{i}", dataset="esnli", split="valid", input=f"A dog runs {i}.</s>An animal moves.",
                               label="entailment", rationales=(r,)) for i, r in enumerate(rationales)]
    tfrecords.write_split(str(src / "esnli"), "valid", examples)
    manifest = run_job(JobConfig(dataset="esnli", split="valid", out=str(tmp_path / "out"), src=str(src / "esnli"),
                                 teacher="annotations", min_rationale_chars=5, progress=False))
    entry = manifest["splits"]["valid"]
    assert entry["num_short_rationales"] == 2 and entry["num_with_rationale"] == 2
    assert entry["min_rationale_chars"] == 5 and entry["parse_rate"] == 1.0
    out = {e.id: e for e in tfrecords.read_split(str(tmp_path / "out" / "esnli"), "valid")}
    assert out["q1"].rationales == () and out["q1"].teacher_label == "entailment"
    assert out["q3"].rationales == (rationales[3],)
