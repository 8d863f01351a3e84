"""`dsbs import --format release` on the real PaLM release: parse rate and agreement in the
paper's band, ids and inputs as in the reference code, readable TFRecords."""
import json

import pytest

from dsbs_jax.data import adapters, import_cli, tfrecords
from dsbs_jax.data.errors import DataError
from dsbs_jax.data.specs import get_spec


def test_real_cqa_import(release_dir, tmp_path, capsys):
    out = tmp_path / "data"
    rc = import_cli.main(["--format", "release", "--dataset", "cqa", "--src", str(release_dir), "--out", str(out),
                          "--splits", "test", "--num_shards", "2"])
    assert rc == 0
    assert import_cli.main(["--format", "release", "--dataset", "cqa", "--src", str(release_dir / "cqa"),
                            "--out", str(out), "--splits", "train", "--limit", "2000"]) == 0
    summary = capsys.readouterr().out
    assert "wrote" in summary and "test" in summary and "train" in summary

    manifest = tfrecords.read_manifest(str(out / "cqa"))
    test, train = manifest["splits"]["test"], manifest["splits"]["train"]
    # --limit 2000 of train, then the reference's 10 % validation hold-out (CQA has no validation split).
    assert (test["num_examples"], train["num_examples"], manifest["splits"]["valid"]["num_examples"]) == (
        1221, 1800, 200)
    assert manifest["teacher"]["model"] == "PaLM-540B"
    # REFERENCE.md: the reference rules give 100 % parsed / 77.2 % teacher = gold on CQA test.
    assert test["reference_rules"]["parse_rate"] == pytest.approx(1.0)
    assert test["reference_rules"]["teacher_gold_agreement"] == pytest.approx(0.772, abs=0.0006)
    for entry in (test, train):
        assert entry["parse_rate"] >= 0.99
        assert 0.70 <= entry["teacher_gold_agreement"] <= 0.85
        # Mapping "(c) Michigan" onto the choice "michigan" can only add agreement.
        assert entry["teacher_gold_agreement"] >= entry["reference_rules"]["teacher_gold_agreement"]
        assert sum(entry["parse_failures"].values()) == round((1 - entry["parse_rate"]) * entry["num_examples"])

    lines = [json.loads(line) for line in (release_dir / "cqa" / "cqa_test.json").read_text().splitlines()]
    examples = list(tfrecords.read_split(str(out / "cqa"), "test", verify=True))
    by_id = {e.id: e for e in examples}
    assert len(by_id) == 1221 and set(by_id) == {raw["id"] for raw in lines}
    first = by_id[lines[0]["id"]]
    c = lines[0]["choices"]
    assert first.input == (f"{lines[0]['question']}\nAnswer Choices:\n(a) {c[0]}\n(b) {c[1]}\n(c) {c[2]}\n"
                           f"(d) {c[3]}\n(e) {c[4]}")
    assert first.label == lines[0]["answer"] and tuple(first.choices) == tuple(c)
    assert first.teacher_label in c and first.rationale and "Q:" not in first.rationale
    assert first.teacher_meta["parse_failure"] is None
    assert all(e.teacher_label in e.choices for e in examples if e.teacher_meta["parse_failure"] is None)


@pytest.mark.parametrize("dataset, low, high", [("esnli", 0.70, 0.76), ("anli1", 0.62, 0.70)])
def test_real_nli_test_split(release_dir, dataset, low, high):
    spec = get_spec(dataset)
    examples = list(adapters.read_release(str(release_dir), dataset, "test"))
    parsed = [e for e in examples if e.teacher_meta["parse_failure"] is None]
    assert len(parsed) / len(examples) >= 0.99
    agreement = sum(e.teacher_label == e.label for e in examples) / len(examples)
    assert low <= agreement <= high
    assert {e.label for e in examples} == set(spec.label_set)
    first = examples[0]
    raw = json.loads((release_dir / dataset / f"{dataset}_test.json").read_text().splitlines()[0])
    assert first.input == f"{raw['premise']}</s>{raw['hypothesis']}"
    expected_id = raw["uid"] if dataset == "anli1" else "esnli-test-1"
    assert first.id == expected_id
    assert len({e.id for e in examples}) == len(examples)


def test_filter_labels_drops_failed_parses(release_dir):
    kept = list(adapters.read_release(str(release_dir), "anli1", "valid"))
    filtered = list(adapters.read_release(str(release_dir), "anli1", "valid", filter_labels=True))
    failed = [i for i, e in enumerate(filtered) if e.teacher_meta["parse_failure"]]
    assert failed, "anli1 valid has outputs without an answer"
    for i in failed:
        assert filtered[i].teacher_label is None and filtered[i].rationales == ()
        assert kept[i].rationales  # unfiltered keeps the text, as the paper did
    assert [e.teacher_label for i, e in enumerate(filtered) if i not in failed] == \
        [e.teacher_label for i, e in enumerate(kept) if i not in failed]


def test_teacher_output_count_is_checked(release_dir, tmp_path):
    """A release copy whose last output file lost its final output is refused, naming the file."""
    root = tmp_path / "release" / "anli1"
    (root / "llm").mkdir(parents=True)
    (root / "anli1_test.json").write_text((release_dir / "anli1" / "anli1_test.json").read_text())
    outputs = json.loads((release_dir / "anli1" / "llm" / "test_CoT_0.json").read_text())
    (root / "llm" / "test_CoT_0.json").write_text(json.dumps(outputs[:-1]))
    with pytest.raises(DataError, match=r"test_CoT_0.json: 999 teacher outputs in 1 file\(s\) for 1000 inputs"):
        next(adapters.read_release(str(tmp_path / "release"), "anli1", "test"))


def test_svamp_in_the_reference_layout(tmp_path):
    """The shared release has no SVAMP; the reference code writes svamp_{split}.json with
    pre-formatted `input`/`label` (SVAMP.json has Body/Question/Equation): both import."""
    root = tmp_path / "svamp"
    (root / "llm").mkdir(parents=True)
    records = [{"input": "Dan has 84 apples.\nHow many each for 2?", "label": "( 84.0 / 2.0 )"},
               {"Body": "Ann has 3 cats.", "Question": "And 4 more?", "Equation": "( 3.0 + 4.0 )", "Answer": 7.0}]
    (root / "svamp_test.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    outputs = ["Split 84 in 2. The answer is (84 / 2).\n\nQ: Tom has 5 pens.",
               "Ann has 3 and gets 4, so the answer is 7."]
    (root / "llm" / "test_CoT_0.json").write_text(json.dumps(outputs))
    first, second = adapters.read_release(str(tmp_path), "svamp", "test")
    assert (first.id, first.input, first.label) == ("svamp-test-1", records[0]["input"], "( 84.0 / 2.0 )")
    assert (first.teacher_label, first.rationale) == ("(84 / 2)", "Split 84 in 2.")
    assert second.input == "Ann has 3 cats.\nAnd 4 more?" and second.label == "( 3.0 + 4.0 )"
    assert second.teacher_label == "7" and second.teacher_meta["parse_notes"] == ["fallback_marker"]


def test_release_from_and_to_a_non_local_filesystem(release_dir):
    """`ram://` stands in for `gs://`: sources and outputs both go through tf.io.gfile."""
    import tensorflow as tf

    src = "ram://dsbs-release-test/release/anli1"
    for name in ("anli1_test.json", "llm/test_CoT_0.json"):
        tf.io.gfile.makedirs(src + "/llm")
        tf.io.gfile.copy(str(release_dir / "anli1" / name), f"{src}/{name}", overwrite=True)
    assert import_cli.main(["--format", "release", "--dataset", "anli1", "--src", "ram://dsbs-release-test/release",
                            "--out", "ram://dsbs-release-test/out", "--splits", "test"]) == 0
    manifest = tfrecords.read_manifest("ram://dsbs-release-test/out/anli1")
    assert manifest["splits"]["test"]["num_examples"] == 1000
    assert manifest["splits"]["test"]["reference_rules"]["teacher_gold_agreement"] == pytest.approx(0.656)
    assert sum(1 for _ in tfrecords.read_split("ram://dsbs-release-test/out/anli1", "test", verify=True)) == 1000
