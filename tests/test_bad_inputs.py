"""Bad inputs through `dsbs import`: each error names file, line and field, and `--out` is left
exactly as it was (empty, or holding the previous complete import)."""
import csv
import json
import os

import pytest

from dsbs_jax.data import import_cli, tfrecords

CHOICES = ["ignore", "enforce", "authoritarian", "yell at", "avoid"]


def _cqa_release(root, n=20, mutate=None, outputs=None):
    """A small release-format CQA folder: `{root}/cqa/cqa_test.json` + `llm/test_CoT_0.json`."""
    folder = root / "cqa"
    (folder / "llm").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": f"id{i}", "question": f"Question {i}?", "choices": CHOICES, "answer": CHOICES[i % 5]})
             for i in range(n)]
    if mutate:
        lines = mutate(lines)
    (folder / "cqa_test.json").write_text("\n".join(lines) + ("\n" if lines else ""))
    if outputs is None:
        outputs = [f"Because. So the answer is ({'abcde'[i % 5]}) {CHOICES[i % 5]}.\n\nQ: next" for i in range(n)]
    (folder / "llm" / "test_CoT_0.json").write_text(json.dumps(outputs))
    return root


def _replace_line(number, text):
    def mutate(lines):
        lines[number - 1] = text
        return lines
    return mutate


def _edit_record(number, **changes):
    def mutate(lines):
        record = json.loads(lines[number - 1])
        for key, value in changes.items():
            if value is _DELETE:
                del record[key]
            else:
                record[key] = value
        lines[number - 1] = json.dumps(record)
        return lines
    return mutate


_DELETE = object()


def _import(capsys, *argv):
    rc = import_cli.main(list(argv))
    return rc, capsys.readouterr().err


def _assert_error(rc, err, *fragments):
    assert rc == 1, err
    (line,) = [line for line in err.splitlines() if line.startswith("dsbs import: error: ")]  # one line, after tqdm
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"


@pytest.fixture
def out(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    yield path
    # Nothing partial: no shards, manifest, *.tmp or staging directory.
    assert os.listdir(path) == [], os.listdir(path)


def _release_args(src, out):
    return ["--format", "release", "--dataset", "cqa", "--src", str(src), "--out", str(out), "--splits", "test"]


def test_truncated_json_line(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", mutate=_replace_line(17, '{"id": "id16", "question": "Question 16?", "cho'))
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json:17:", "not valid JSON", "truncated")


def test_missing_field(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", mutate=_edit_record(5, question=_DELETE))
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json:5: field 'question': missing", "'answer', 'choices', 'id'")


def test_unknown_label(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", mutate=_edit_record(17, answer="xyz"))
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json:17: field 'answer': expected one of the 5 choices", "found 'xyz'",
                  "(fix: ")


def test_non_string_field(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", mutate=_edit_record(3, question=["not", "a", "string"]))
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json:3: field 'question': expected a str, found list")


def test_wrong_number_of_choices(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", mutate=_edit_record(8, choices=CHOICES[:4]))
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json:8: field 'choices': expected a list of 5 strings")


def test_empty_file(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", n=0, outputs=[])
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json: file is empty")


def test_teacher_outputs_fewer_than_inputs(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", outputs=["So the answer is (a) ignore."] * 19)
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "test_CoT_0.json: 19 teacher outputs in 1 file(s) for 20 inputs in cqa_test.json")


def test_teacher_output_not_a_string(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", outputs=["So the answer is (a) ignore."] * 6 + [{"text": "x"}] * 14)
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "test_CoT_0.json: field '[6]': expected a string, found dict")


def test_duplicate_ids(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", mutate=_edit_record(9, id="id2"))
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json:9: field 'id': duplicate id 'id2' (first seen on line 3)")


def test_blank_line_inside_jsonl(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", mutate=_replace_line(4, ""))
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json:4: empty line")


def test_unreadable_file(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r")
    path = src / "cqa" / "cqa_test.json"
    path.write_bytes(path.read_bytes()[:40] + b"\xff\xfe\x00" + path.read_bytes()[40:])  # not UTF-8
    rc, err = _import(capsys, *_release_args(src, out))
    _assert_error(rc, err, "cqa_test.json:1: not UTF-8 text at column 41 (byte 0xff)")


def test_missing_split_file(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r")
    rc, err = _import(capsys, "--format", "release", "--dataset", "cqa", "--src", str(src), "--out", str(out),
                      "--splits", "valid")
    _assert_error(rc, err, "cqa_valid.json: file not found", "cqa_test.json", "--splits")


def test_nli_label_out_of_range(tmp_path, out, capsys):
    records = [{"premise": "P.", "hypothesis": "H.", "label": i % 3} for i in range(6)]
    records[4]["label"] = -1
    path = tmp_path / "nli.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rc, err = _import(capsys, "--format", "jsonl", "--dataset", "esnli", "--src", str(path), "--out", str(out))
    _assert_error(rc, err, "nli.jsonl:5: field 'label': expected 0/1/2 or one of", "found -1")


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    return path


def test_bad_csv_header(tmp_path, out, capsys):
    path = _csv(tmp_path / "d.csv", ["question", "label"], [["Q?", "yes"]])
    rc, err = _import(capsys, "--format", "csv", "--dataset", "mine", "--src", str(path), "--out", str(out),
                      "--template", "{question}", "--label_field", "answer")
    _assert_error(rc, err, "d.csv:1: field 'answer': column missing from the CSV header ['question', 'label']",
                  "--label_field")


def test_csv_row_with_wrong_column_count(tmp_path, out, capsys):
    rows = [["Q1?", "yes"], ["Q2?", "no"], ["Q3, unquoted", "x", "no"]]
    path = _csv(tmp_path / "d.csv", ["question", "answer"], rows)
    rc, err = _import(capsys, "--format", "csv", "--dataset", "mine", "--src", str(path), "--out", str(out),
                      "--template", "{question}", "--label_field", "answer")
    _assert_error(rc, err, "d.csv:4: expected 2 columns (question,answer), found 3", "quote fields")


def test_template_names_absent_field(tmp_path, out, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "Q?", "context": "C.", "answer": "yes"}) + "\n")
    rc, err = _import(capsys, "--format", "jsonl", "--dataset", "mine", "--src", str(path), "--out", str(out),
                      "--template", "{question}\\nContext: {contxt}", "--label_field", "answer")
    _assert_error(rc, err, "d.jsonl:1: field 'contxt': missing (named by the input template)",
                  "['answer', 'context', 'question']")


def test_malformed_template(tmp_path, out, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "Q?"}) + "\n")
    rc, err = _import(capsys, "--format", "jsonl", "--dataset", "mine", "--src", str(path), "--out", str(out),
                      "--template", "{question")
    _assert_error(rc, err, "field '--template': malformed template", "{{")


def test_label_outside_label_set(tmp_path, out, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"q": f"Q{i}", "a": a}) + "\n" for i, a in enumerate(["yes", "no", "maybe"])))
    rc, err = _import(capsys, "--format", "jsonl", "--dataset", "mine", "--src", str(path), "--out", str(out),
                      "--template", "{q}", "--label_field", "a", "--label_set", "yes,no")
    _assert_error(rc, err, "d.jsonl:3: field 'a': expected one of ['yes', 'no'], found 'maybe'", "--label_set")


def test_bad_second_split_leaves_previous_import_untouched(tmp_path, capsys):
    """train is fine, test is broken: neither replaces the complete output already in --out."""
    src = tmp_path / "src"
    src.mkdir()
    good = [{"q": f"Q{i}", "a": "yes"} for i in range(4)]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    (src / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    out = tmp_path / "out"
    args = ["--format", "jsonl", "--dataset", "mine", "--src", str(src), "--out", str(out), "--template", "{q}",
            "--label_field", "a", "--holdout", "0"]  # (the default hold-out: test_user_data_defaults.py)
    assert import_cli.main(args) == 0
    before = {name: (out / "mine" / name).read_bytes() for name in os.listdir(out / "mine")}
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good + [{"q": "new", "a": "no"}]))
    (src / "test.jsonl").write_text(json.dumps(good[0]) + "\n" + json.dumps({"q": None, "a": "no"}) + "\n")
    rc, err = _import(capsys, *args)  # the same source: its splits would be added, not the dataset replaced
    _assert_error(rc, err, "test.jsonl:2: field 'q': missing")
    assert sorted(os.listdir(out)) == ["mine"]  # the staging directory is gone
    after = {name: (out / "mine" / name).read_bytes() for name in os.listdir(out / "mine")}
    assert after == before
    assert tfrecords.read_manifest(str(out / "mine"))["splits"]["train"]["num_examples"] == 4


def test_user_directory_without_split_files(tmp_path, out, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("not data")
    rc, err = _import(capsys, "--format", "jsonl", "--dataset", "mine", "--src", str(src), "--out", str(out),
                      "--template", "{q}")
    _assert_error(rc, err, "src: no {split}.jsonl files in this directory", "--splits")


def test_import_into_existing_dataset_needs_overwrite_and_then_replaces_it_whole(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for split in ("train", "test"):
        (src / f"{split}.jsonl").write_text("".join(json.dumps({"q": f"{split}{i}", "a": "yes"}) + "\n"
                                                   for i in range(3)))
    out = tmp_path / "out"
    args = ["--format", "jsonl", "--dataset", "mine", "--src", str(src), "--out", str(out), "--template", "{q}",
            "--label_field", "a"]
    assert import_cli.main(args) == 0
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"q": "only", "a": "no"}) + "\n")
    again = ["--format", "jsonl", "--dataset", "mine", "--src", str(other), "--out", str(out), "--template", "{q}",
             "--label_field", "a", "--holdout", "0"]  # one record: nothing to hold out
    before = {name: (out / "mine" / name).read_bytes() for name in os.listdir(out / "mine")}
    rc = import_cli.main(again)
    err = capsys.readouterr().err
    assert rc == 2 and "already holds an import of 'mine' from jsonl 'src'" in err and "--overwrite" in err
    assert {name: (out / "mine" / name).read_bytes() for name in os.listdir(out / "mine")} == before

    assert import_cli.main(again + ["--overwrite", "--num_shards", "2"]) == 0
    manifest = tfrecords.read_manifest(str(out / "mine"))
    assert sorted(manifest["splits"]) == ["train"] and manifest["source"]["path"] == "other.jsonl"
    assert manifest["splits"]["train"]["num_examples"] == 1
    assert sorted(os.listdir(out / "mine")) == sorted(["manifest.json", "dataset_spec.json"] + manifest["splits"][
        "train"]["files"])  # no shard of the old import is left
    assert sorted(os.listdir(out)) == ["mine"]  # no staging or replaced-aside directory


def test_a_60_mb_line_is_refused_while_streaming(tmp_path):
    """The oversized field is found in a bounded window: memory stays near one chunk, not the line."""
    import tracemalloc

    from dsbs_jax.data.adapters.lines import iter_json_lines
    from dsbs_jax.data.errors import DataError

    path = tmp_path / "huge.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"q": "fine", "a": "yes"}) + "\n")
        f.write('{"q": "Why?", "context": "' + "x" * (60 << 20) + '", "a": "yes"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            list(iter_json_lines(str(path)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(error.value).startswith("huge.jsonl:2: field 'context': value is at least")
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB while reading a 60 MiB line"


def test_field_scanner_handles_escapes_nesting_and_chunk_boundaries(tmp_path):
    from dsbs_jax.data.adapters import lines
    from dsbs_jax.data.errors import DataError

    value = 'a \\" quote, a {brace} and [brackets]: ' * 40  # escaped quotes and structure inside a string
    record = {"nested": {"k": [1, 2, {"x": "y"}]}, "text": value, "tail": "z" * 3000}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record) + "\n")
    limit = len(json.dumps(record["tail"])) - 1  # only "tail" (3002 bytes with its quotes) is over
    old_chunk = lines._CHUNK
    try:
        for chunk in (7, 64, 1 << 20):  # boundaries fall inside escapes and keys
            lines._CHUNK = chunk
            with pytest.raises(DataError, match="d.jsonl:1: field 'tail': value is 300[23] bytes"):
                list(lines.iter_json_lines(str(path), max_field_bytes=limit))
            assert list(lines.iter_json_lines(str(path), max_field_bytes=limit + 8)) == [(1, record)]
    finally:
        lines._CHUNK = old_chunk


def test_verbose_adds_the_traceback(tmp_path, out, capsys):
    src = _cqa_release(tmp_path / "r", mutate=_edit_record(5, question=_DELETE))
    rc, err = _import(capsys, *_release_args(src, out), "--verbose")
    assert rc == 1 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("dsbs import: error: cqa_test.json:5: field 'question'")
