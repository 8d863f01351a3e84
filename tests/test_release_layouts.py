"""Release layouts the shared copy lacks, written here in the release's own format: SVAMP and
ASDiv (equation labels), the SVAMP + ASDiv augmentation, and ANLI-r1's 5,000-output llm files."""
import json

from dsbs_jax.data import import_cli, tfrecords


def _write_release(root, dataset, split, records, outputs, per_file):
    folder = root / dataset
    (folder / "llm").mkdir(parents=True, exist_ok=True)
    (folder / f"{dataset}_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    for i in range(0, len(outputs), per_file):
        (folder / "llm" / f"{split}_CoT_{i // per_file}.json").write_text(json.dumps(outputs[i:i + per_file]))


def _svamp(n, offset=0):
    records = [{"Body": f"Tom has {i + offset} apples.", "Question": "He eats 2. How many are left?",
                "Equation": f"( {i + offset}.0 - 2.0 )"} for i in range(n)]
    # The teacher writes the same value in another form ("(5 - 2)" vs "( 5.0 - 2.0 )"), wrong on every 4th.
    outputs = [f"Tom had {i + offset} and ate 2. The answer is ({i + offset} - {3 if i % 4 == 3 else 2}).\n\nQ: x"
               for i in range(n)]
    return records, outputs


def test_svamp_agreement_compares_equations_by_value(tmp_path):
    src, out = tmp_path / "release", tmp_path / "data"
    records, outputs = _svamp(40)
    _write_release(src, "svamp", "test", records, outputs, 500)
    assert import_cli.main(["--format", "release", "--dataset", "svamp", "--src", str(src), "--out", str(out),
                            "--splits", "test"]) == 0
    entry = tfrecords.read_manifest(str(out / "svamp"))["splits"]["test"]
    assert entry["parse_rate"] == 1.0
    assert entry["teacher_gold_agreement"] == 0.75  # by value; string equality would give 0.0
    assert entry["reference_rules"]["teacher_gold_agreement"] == 0.75


def test_svamp_holds_out_the_papers_validation_split(tmp_path):
    src, out = tmp_path / "release", tmp_path / "data"
    records, outputs = _svamp(800)
    _write_release(src, "svamp", "train", records, outputs, 500)
    assert import_cli.main(["--format", "release", "--dataset", "svamp", "--src", str(src), "--out", str(out),
                            "--splits", "train"]) == 0
    splits = tfrecords.read_manifest(str(out / "svamp"))["splits"]
    assert (splits["train"]["num_examples"], splits["valid"]["num_examples"]) == (720, 80)
    assert import_cli.main(["--format", "release", "--dataset", "svamp", "--src", str(src), "--out",
                            str(tmp_path / "no_holdout"), "--splits", "train", "--holdout", "0"]) == 0
    assert set(tfrecords.read_manifest(str(tmp_path / "no_holdout" / "svamp"))["splits"]) == {"train"}


def test_svamp_asdiv_trains_on_both_and_tests_on_svamp(tmp_path):
    """The reference's `--dataset asdiv`: SVAMP train + ASDiv train, 10 % held out, SVAMP test."""
    src, out = tmp_path / "release", tmp_path / "data"
    svamp_train, svamp_outputs = _svamp(30)
    _write_release(src, "svamp", "train", svamp_train, svamp_outputs, 500)
    svamp_test, test_outputs = _svamp(10, offset=100)
    _write_release(src, "svamp", "test", svamp_test, test_outputs, 500)
    asdiv = [{"Body": f"A box holds {i} pens.", "Question": "Add 3 pens. How many?", "Answer": f"{i + 3} (pens)"}
             for i in range(20)]
    _write_release(src, "asdiv", "train", asdiv, [f"{i} plus 3. The answer is ({i} + 3)." for i in range(20)], 1000)
    assert import_cli.main(["--format", "release", "--dataset", "svamp_asdiv", "--src", str(src), "--out",
                            str(out)]) == 0
    splits = tfrecords.read_manifest(str(out / "svamp_asdiv"))["splits"]
    assert {s: e["num_examples"] for s, e in splits.items()} == {"train": 45, "valid": 5, "test": 10}
    train_and_valid = [e for s in ("train", "valid") for e in tfrecords.read_split(str(out / "svamp_asdiv"), s)]
    assert sorted(e.id.split("-")[0] for e in train_and_valid).count("asdiv") == 20
    assert all(e.id.startswith("svamp-test") for e in tfrecords.read_split(str(out / "svamp_asdiv"), "test"))
    assert splits["train"]["teacher_gold_agreement"] is not None


def test_anli_train_llm_files_hold_5000_outputs(tmp_path):
    """ANLI-r1's train split spans files of 5,000 outputs (the reference's batch_size = 5000)."""
    src, out = tmp_path / "release", tmp_path / "data"
    n = 5003
    records = [{"uid": f"u{i}", "premise": f"P {i}.", "hypothesis": f"H {i}.", "label": i % 3, "reason": ""}
               for i in range(n)]
    outputs = [f"Because {i}. So the answer is {('entailment', 'neutral', 'contradiction')[i % 3]}.\n\nPremise: x"
               for i in range(n)]
    _write_release(src, "anli1", "train", records, outputs, 5000)
    assert sorted(p.name for p in (src / "anli1" / "llm").iterdir()) == ["train_CoT_0.json", "train_CoT_1.json"]
    assert import_cli.main(["--format", "release", "--dataset", "anli1", "--src", str(src), "--out", str(out),
                            "--splits", "train"]) == 0
    entry = tfrecords.read_manifest(str(out / "anli1"))["splits"]["train"]
    assert entry["num_examples"] == n and entry["teacher_gold_agreement"] == 1.0
