"""Sources other than the release: user JSONL/CSV with a field mapping, and TFDS on disk."""
import csv
import json
import os
import shutil

import pytest

from dsbs_jax.data import adapters, import_cli, specs, tfrecords
from dsbs_jax.data.errors import DataError


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


RECORDS = [
    {"qid": "q1", "question": "Is ice cold?", "context": "Ice is frozen water.", "answer": "yes", "why": "Frozen."},
    {"qid": "q2", "question": "Is fire cold?", "context": "Fire burns.", "answer": "no", "why": ""},
    {"qid": 3, "question": "Year?", "context": 1999, "answer": "no", "why": "Numbers format too."},
]


def test_jsonl_template_label_rationale_id(tmp_path):
    mapping = adapters.FieldMapping(template="{question}\nContext: {context}", label_field="answer",
                                    rationale_field="why", id_field="qid", label_set=("yes", "no"))
    examples = list(adapters.read_user(str(_write_jsonl(tmp_path / "d.jsonl", RECORDS)), "myqa", "train", mapping))
    assert [e.id for e in examples] == ["q1", "q2", "3"]
    assert examples[0].input == "Is ice cold?\nContext: Ice is frozen water."
    assert examples[2].input == "Year?\nContext: 1999"
    assert [e.label for e in examples] == ["yes", "no", "no"]
    assert [e.rationales for e in examples] == [("Frozen.",), (), ("Numbers format too.",)]
    assert all(e.dataset == "myqa" and e.split == "train" for e in examples)


def test_csv_input_fields_and_default_ids(tmp_path):
    path = _write_csv(tmp_path / "d.csv", ["question", "context", "answer"],
                      [["Is ice cold?", "Ice, frozen water.", "yes"], ["Multi\nline?", "ok", "no"]])
    mapping = adapters.FieldMapping(input_fields=("question", "context"), label_field="answer")
    examples = list(adapters.read_user(str(path), "myqa", "test", mapping))
    assert [e.input for e in examples] == ["Is ice cold?\nIce, frozen water.", "Multi\nline?\nok"]
    # Default ids number the record's (last) line in the file: the quoted newline spans lines 3-4.
    assert [e.id for e in examples] == ["myqa-test-2", "myqa-test-4"]
    assert [e.label for e in examples] == ["yes", "no"]


def test_unlabeled_user_data(tmp_path):
    path = _write_jsonl(tmp_path / "u.jsonl", [{"text": "a"}, {"text": "b"}])
    examples = list(adapters.read_user(str(path), "u", "test", adapters.FieldMapping(template="Q: {text}")))
    assert [(e.input, e.label) for e in examples] == [("Q: a", None), ("Q: b", None)]


def test_user_spec_parses_teacher_outputs_for_the_rationale_job():
    mapping = adapters.FieldMapping(template="{question}", label_field="answer", label_set=("yes", "no"))
    spec = specs.register_spec(adapters.user_spec("myqa_spec_test", mapping))
    assert specs.get_spec("myqa_spec_test") is spec
    parsed = spec.parse_teacher("Ice is frozen. So the answer is Yes.\n\nQ: next")
    assert (parsed.label, parsed.rationale) == ("yes", "Ice is frozen.")
    assert spec.format_input({"question": "Cold?"}) == "Cold?"
    assert spec.gold_label({"question": "Cold?", "answer": "yes"}) == "yes"


def test_cli_jsonl_directory_with_two_splits(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _write_jsonl(src / "train.jsonl", RECORDS)
    _write_jsonl(src / "test.jsonl", RECORDS[:1])
    out = tmp_path / "out"
    rc = import_cli.main(["--format", "jsonl", "--dataset", "myqa", "--src", str(src), "--out", str(out),
                          "--template", "{question}\\nContext: {context}", "--label_field", "answer",
                          "--rationale_field", "why", "--id_field", "qid", "--num_shards", "2",
                          "--holdout", "0"])  # (the default 10 % hold-out: test_user_data_defaults.py)
    assert rc == 0
    manifest = tfrecords.read_manifest(str(out / "myqa"))
    assert {s: e["num_examples"] for s, e in manifest["splits"].items()} == {"test": 1, "train": 3}
    assert manifest["splits"]["train"]["num_with_rationale"] == 2
    assert manifest["source"]["format"] == "jsonl"
    back = {e.id: e for e in tfrecords.read_split(str(out / "myqa"), "train", verify=True)}
    assert back["q1"].input == "Is ice cold?\nContext: Ice is frozen water." and back["q1"].rationale == "Frozen."
    assert sorted(os.listdir(out)) == ["myqa"]  # no staging directory left
    assert "train" in capsys.readouterr().out


def test_cli_known_dataset_as_jsonl_uses_its_spec(tmp_path):
    """CQA records in a user's JSONL file need no template: the cqa spec formats them."""
    record = {"id": "x1", "question": "Where?", "choices": ["a", "b", "c", "d", "e"], "answer": "c"}
    src = _write_jsonl(tmp_path / "cqa.jsonl", [record])
    assert import_cli.main(["--format", "jsonl", "--dataset", "cqa", "--src", str(src), "--out",
                            str(tmp_path / "out"), "--id_field", "id", "--holdout", "0"]) == 0  # one record
    (example,) = tfrecords.read_split(str(tmp_path / "out" / "cqa"), "train")
    assert example.input == specs.get_spec("cqa").format_input(record) and example.label == "c"
    assert tuple(example.choices) == ("a", "b", "c", "d", "e") and example.id == "x1"


def _prepare_tiny_esnli(tmp_path):
    """Builds a tiny e-SNLI in TFDS's on-disk format with the real TFDS e-SNLI builder (its
    features and CSV reader), fed local CSV files instead of its download URLs, and lays it
    out under the name `esnli` as `tfds build esnli` would."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.text import esnli

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("dev", "test"):
        _write_csv(raw / f"{name}.csv", ["pairID", "gold_label", "Sentence1", "Sentence2", "Explanation_1"],
                   [[f"{name}{i}", label, f"Premise {name} {i}.", f"Hypothesis {i}.", "e"]
                    for i, label in enumerate(["entailment", "neutral", "contradiction", "neutral"])])

    class DsbsTestLocalEsnli(esnli.Esnli, skip_registration=True):  # no global TFDS registry entry
        def _split_generators(self, dl_manager):
            del dl_manager
            return {"validation": self._generate_examples(files=[str(raw / "dev.csv")]),
                    "test": self._generate_examples(files=[str(raw / "test.csv")])}

    built = tmp_path / "built"
    builder = DsbsTestLocalEsnli(data_dir=str(built))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    data_dir = tmp_path / "tensorflow_datasets"
    target = data_dir / "esnli" / str(builder.version)
    target.mkdir(parents=True)
    for name in os.listdir(builder.data_dir):
        shutil.copy(os.path.join(builder.data_dir, name), target / name.replace(builder.name, "esnli"))
    info = json.loads((target / "dataset_info.json").read_text())
    info["name"] = "esnli"
    (target / "dataset_info.json").write_text(json.dumps(info))
    return data_dir


def test_tfds_esnli_from_local_data_dir(tmp_path):
    data_dir = _prepare_tiny_esnli(tmp_path)
    out = tmp_path / "out"
    assert import_cli.main(["--format", "tfds", "--dataset", "esnli", "--src", str(data_dir), "--out", str(out),
                            "--splits", "valid", "test"]) == 0
    manifest = tfrecords.read_manifest(str(out / "esnli"))
    assert {s: e["num_examples"] for s, e in manifest["splits"].items()} == {"test": 4, "valid": 4}
    examples = list(tfrecords.read_split(str(out / "esnli"), "valid"))
    assert {e.input for e in examples} == {f"Premise dev {i}.</s>Hypothesis {i}." for i in range(4)}
    by_input = {e.input: e.label for e in examples}
    assert by_input["Premise dev 2.</s>Hypothesis 2."] == "contradiction"
    assert sorted(e.id for e in examples) == [f"esnli-valid-{i}" for i in range(1, 5)]
    # Re-reading gives the same ids for the same inputs (stable ids).
    again = {e.id: e.input for e in adapters.read_tfds("esnli", "valid", data_dir=str(data_dir))}
    assert again == {e.id: e.input for e in examples}


def test_tfds_never_downloads(tmp_path):
    with pytest.raises(DataError) as error:
        next(adapters.read_tfds("anli1", "test", data_dir=str(tmp_path)))
    assert "anli/r1" in str(error.value) and "not prepared" in str(error.value)
    assert "tfds build" in str(error.value)
    assert os.listdir(tmp_path) == []


def test_user_rationales_do_not_count_as_teacher_output(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", RECORDS)
    mapping = adapters.FieldMapping(template="{question}", label_field="answer", rationale_field="why", id_field="qid")
    entry = tfrecords.write_split(str(tmp_path / "out"), "train", adapters.read_user(str(path), "m", "train", mapping))
    assert entry["num_with_rationale"] == 2 and entry["num_with_teacher_output"] == 0
    assert entry["parse_rate"] is None and entry["teacher_gold_agreement"] is None


def test_imported_user_dataset_is_known_to_the_rationale_job(tmp_path, capsys):
    """`dsbs import --format jsonl` saves the dataset's spec; `dsbs rationales --dataset NAME --src
    {out}/NAME` finds it there (this process never registered the name)."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from teacher_server import FaultPlan, ServerThread

    from dsbs_jax.rationales import cli as rationales_cli

    name = "mine_spec_roundtrip"
    assert name not in specs.known_specs()
    records = [{"q": f"Is {i} even?", "a": ["yes", "no"][i % 2], "why": f"{i} mod 2 is {i % 2}."} for i in range(6)]
    src = _write_jsonl(tmp_path / "mine.jsonl", records)
    data = tmp_path / "data"
    assert import_cli.main(["--format", "jsonl", "--dataset", name, "--src", str(src), "--out", str(data),
                            "--template", "Q: {q}", "--label_field", "a", "--rationale_field", "why",
                            "--label_set", "yes,no", "--holdout", "0"]) == 0
    saved = json.loads((data / name / "dataset_spec.json").read_text())
    assert saved["mapping"]["template"] == "Q: {q}" and saved["mapping"]["label_set"] == ["yes", "no"]
    assert saved["parser"]["kind"] == "label" and saved["metric"] == "accuracy"
    assert tfrecords.read_manifest(str(data / name))["metric"] == "accuracy"

    # The annotations teacher: the user's own rationales, parsed with the saved spec's parser.
    assert rationales_cli.main(["--dataset", name, "--split", "train", "--src", str(data / name), "--out",
                                str(tmp_path / "teacher"), "--teacher", "annotations", "--no_progress"]) == 0
    entry = tfrecords.read_manifest(str(tmp_path / "teacher" / name))["splits"]["train"]
    assert entry["num_examples"] == 6 and entry["parse_rate"] == 1.0 and entry["teacher_gold_agreement"] == 1.0
    spec = specs.get_spec(name)
    assert spec.label_set == ("yes", "no") and spec.prompt_file == ""

    # An OpenAI-compatible teacher needs the user's few-shot prompt (there is no bundled one).
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Q: Is 2 even?\nA: 2 mod 2 is 0. So the answer is yes.\n\nQ: {input}\nA:")
    with ServerThread(FaultPlan()) as server:
        assert rationales_cli.main(["--dataset", name, "--split", "train", "--src", str(data / name), "--out",
                                    str(tmp_path / "served"), "--base_url", server.url, "--model", "toy",
                                    "--prompt_file", str(prompt), "--min_parse_rate", "0", "--no_progress"]) == 0
        assert server.plan.seen[0]["body"]["prompt"].endswith("Q: Q: Is 0 even?\nA:")
    assert tfrecords.read_manifest(str(tmp_path / "served" / name))["splits"]["train"]["requests"] == 6
