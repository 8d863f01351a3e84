"""User data: JSON lines or CSV with a mapping from its fields onto (input, label, rationale, id).

    mapping = FieldMapping(template="{question}\\nContext: {context}", label_field="answer",
                           rationale_field="why", id_field="qid", label_set=("yes", "no"))
    examples = read_user("train.csv", dataset="myqa", split="train", mapping=mapping)

The input is either a Python format template over the record's fields or the listed
`input_fields` joined by newlines. Records without a label are allowed unless a label field
is given. A given rationale field fills `Example.rationales` (rationales from your own teacher).
"""
from __future__ import annotations

import dataclasses
import json
import string
from typing import Any, Iterator, Mapping, Optional

from dsbs_jax.data import parsers, schema, specs
from dsbs_jax.data.adapters.base import IdChecker, join, path_exists, record_id
from dsbs_jax.data.adapters.lines import DEFAULT_MAX_FIELD_BYTES, iter_csv_rows, iter_json_lines
from dsbs_jax.data.errors import DataError, FieldError

FORMATS = ("jsonl", "csv")
_SCALARS = (str, int, float)


@dataclasses.dataclass(frozen=True)
class FieldMapping:
    """How a user's records map onto an Example.

    Attributes:
      template: Python format string over record fields, e.g. "{question}\\nContext: {context}".
      input_fields: used when there is no template: these fields joined by "\\n".
      label_field: gold label field; None for unlabeled data.
      rationale_field: optional rationale field.
      id_field: optional id field; default ids are "{dataset}-{split}-{line}".
      label_set: allowed labels; None for free-form labels.
    """

    template: Optional[str] = None
    input_fields: tuple[str, ...] = ()
    label_field: Optional[str] = None
    rationale_field: Optional[str] = None
    id_field: Optional[str] = None
    label_set: Optional[tuple[str, ...]] = None

    def template_fields(self) -> tuple[str, ...]:
        """The record fields the input needs; raises `DataError` for a malformed template."""
        if self.template is None:
            if not self.input_fields:
                raise DataError(None, None, "--template", "no input given",
                                fix="pass --template '{question}' or --input_fields question,context")
            return tuple(self.input_fields)
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None]
        except ValueError as error:
            raise DataError(None, None, "--template", f"malformed template {self.template!r}: {error}",
                            fix="use Python format syntax; write literal braces as {{ and }}") from None
        for name in names:
            if not name or name.isdigit() or any(c in name for c in ".[]"):
                raise DataError(None, None, "--template", f"template field {{{name}}} must be a plain field name",
                                fix="name record fields, e.g. '{question}'")
        if not names:
            raise DataError(None, None, "--template", f"template {self.template!r} names no field",
                            fix="name record fields, e.g. '{question}'")
        return tuple(dict.fromkeys(names))

    def required_fields(self) -> tuple[str, ...]:
        optional = (self.label_field, self.rationale_field, self.id_field)
        return tuple(dict.fromkeys(self.template_fields() + tuple(f for f in optional if f)))


def _scalar(raw: Mapping[str, Any], name: str, what: str) -> str:
    if name not in raw or raw[name] is None:
        raise FieldError(name, f"missing ({what}); the record has fields {sorted(raw)}",
                         fix="add the field or change the flag that names it")
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        raise FieldError(name, f"expected a string ({what}), found {type(value).__name__} {value!r:.60}")
    return str(value)


def user_spec(dataset: str, mapping: FieldMapping, parser: Optional[parsers.TeacherParser] = None) -> specs.DatasetSpec:
    """A `DatasetSpec` for user data (register it with `specs.register_spec` for the rationale job).

    The default parser expects the CQA-style answer sentence "So the answer is <label>." and
    cuts run-on text at "Q:".
    """
    fields = mapping.template_fields()

    def format_input(raw: Mapping[str, Any]) -> str:
        values = {name: _scalar(raw, name, "named by the input template") for name in fields}
        if mapping.template is None:
            return "\n".join(values[name] for name in fields)
        return mapping.template.format(**values)

    def gold_label(raw: Mapping[str, Any]) -> Optional[str]:
        if mapping.label_field is None:
            return None
        label = _scalar(raw, mapping.label_field, "--label_field")
        if not label.strip():
            raise FieldError(mapping.label_field, "empty label",
                             fix="fill it in, or drop --label_field for unlabeled data")
        if mapping.label_set is not None and label not in mapping.label_set:
            raise FieldError(mapping.label_field, f"expected one of {list(mapping.label_set)}, found {label!r}",
                             fix="correct the record or widen --label_set")
        return label

    if parser is None:
        kind = "label" if mapping.label_set else "free"
        parser = parsers.TeacherParser(("Q:",), "So the answer is", kind, mapping.label_set)
    # No bundled few-shot prompt: the rationale job asks for --prompt_file.
    return specs.DatasetSpec(name=dataset, format_input=format_input, gold_label=gold_label, parser=parser,
                             label_set=mapping.label_set, prompt_file="", stop_sequences=("\n\nQ:",),
                             id_field=mapping.id_field)


@dataclasses.dataclass
class ReadNotes:
    """What `read_user` converted without failing (and what the import decided), for `dsbs import` to say."""

    numeric_labels: int = 0  # labels given as JSON numbers, stored as their text
    first_numeric_label: Any = None
    dropped_vocabulary: Optional[dict] = None  # the dataset's own vocabulary an import made stale


SPEC_FILE = specs.SPEC_FILE
SPEC_VERSION = 1


def spec_record(dataset: str, mapping: FieldMapping, parser: Optional[parsers.TeacherParser] = None) -> dict:
    """What `dsbs import --format jsonl|csv` writes to `{dataset_dir}/dataset_spec.json`: enough to
    rebuild the spec (template, label set, parser, metric) in any later command."""
    spec = user_spec(dataset, mapping, parser)
    p = spec.parser
    return {
        "spec_version": SPEC_VERSION, "name": dataset, "metric": spec.metric,
        "mapping": {"template": mapping.template, "input_fields": list(mapping.input_fields),
                    "label_field": mapping.label_field, "rationale_field": mapping.rationale_field,
                    "id_field": mapping.id_field,
                    "label_set": list(mapping.label_set) if mapping.label_set is not None else None},
        "parser": {"kind": p.kind, "answer_marker": p.answer_marker, "cut_markers": list(p.cut_markers),
                   "fallback_markers": list(p.fallback_markers),
                   "label_set": list(p.label_set) if p.label_set is not None else None},
        "stop_sequences": list(spec.stop_sequences),
    }


def spec_from_record(record: Mapping[str, Any], path: str = SPEC_FILE) -> specs.DatasetSpec:
    """Inverse of `spec_record`; `DataError` naming the file for a damaged or newer record."""
    try:
        if record.get("spec_version", 0) > SPEC_VERSION:
            raise DataError(path, None, "spec_version", f"{record['spec_version']} is newer than this code's "
                            f"{SPEC_VERSION}", fix="upgrade dsbs-jax")
        m, p = record["mapping"], record["parser"]
        mapping = FieldMapping(template=m["template"], input_fields=tuple(m["input_fields"]),
                               label_field=m["label_field"], rationale_field=m["rationale_field"],
                               id_field=m["id_field"],
                               label_set=tuple(m["label_set"]) if m["label_set"] is not None else None)
        parser = parsers.TeacherParser(tuple(p["cut_markers"]), p["answer_marker"], p["kind"],
                                       tuple(p["label_set"]) if p["label_set"] is not None else None,
                                       fallback_markers=tuple(p["fallback_markers"]))
        spec = user_spec(record["name"], mapping, parser)
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(path, None, None, f"damaged dataset spec ({type(error).__name__}: {error})",
                        fix="re-run `dsbs import` for this dataset") from None
    return dataclasses.replace(spec, metric=record.get("metric", spec.metric),
                               stop_sequences=tuple(record.get("stop_sequences", spec.stop_sequences)))


def write_spec_file(dataset_dir: str, record: Mapping[str, Any]) -> None:
    """Writes the spec record next to the manifest."""
    from dsbs_jax.data import fs

    fs.makedirs(dataset_dir)
    with fs.GFile(join(dataset_dir, SPEC_FILE), "w") as f:
        f.write(json.dumps(dict(record), indent=1, sort_keys=True))


def read_spec_file(path: str) -> specs.DatasetSpec:
    from dsbs_jax.data import fs

    with fs.GFile(path, "r") as f:
        text = f.read()
    try:
        record = json.loads(text)
    except ValueError as error:
        raise DataError(path, None, None, f"not valid JSON ({error})", fix="re-run `dsbs import`") from None
    return spec_from_record(record, path)


def read_user(path: str, dataset: str, split: str, mapping: FieldMapping, *, fmt: Optional[str] = None,
              spec: Optional[specs.DatasetSpec] = None, max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
              notes: Optional[ReadNotes] = None) -> Iterator[schema.Example]:
    """Yields Examples from a user's JSONL or CSV file.

    Args:
      path: the file; `fmt` defaults from its extension (.jsonl/.json -> jsonl, .csv -> csv).
      dataset, split: names written into the examples.
      mapping: the field mapping.
      spec: defaults to `user_spec(dataset, mapping)`.
      max_field_bytes: the largest field allowed (`--max_field_bytes`); lines are streamed.
      notes: filled with the silent conversions (numeric labels become text).

    Raises:
      DataError: with the file, line and field of the first bad record.
    """
    fmt = fmt or ("csv" if path.lower().endswith(".csv") else "jsonl")
    if fmt not in FORMATS:
        raise DataError(path, None, None, f"unknown format {fmt!r}; expected one of {FORMATS}", fix="--format")
    if spec is None:
        spec, required = user_spec(dataset, mapping), mapping.required_fields()
    else:  # the spec knows its own input fields
        required = tuple(f for f in (mapping.label_field, mapping.rationale_field, mapping.id_field) if f)
    if not path_exists(path):
        raise DataError(path, None, None, "file not found", fix="check --src")
    rows = (iter_csv_rows(path, required, max_field_bytes) if fmt == "csv"
            else iter_json_lines(path, max_field_bytes))
    ids = IdChecker(path, mapping.id_field)
    for line, raw in rows:
        example_id = record_id(raw, mapping.id_field, f"{dataset}-{split}-{line}", path, line)
        ids.check(example_id, line)
        label = raw.get(mapping.label_field) if mapping.label_field else None
        if notes is not None and isinstance(label, (int, float)) and not isinstance(label, bool):
            notes.numeric_labels += 1
            notes.first_numeric_label = label if notes.first_numeric_label is None else notes.first_numeric_label
        try:
            example = schema.Example(id=example_id, dataset=dataset, split=split, input=spec.format_input(raw),
                                     label=spec.gold_label(raw), choices=spec.choices(raw))
            if mapping.rationale_field:
                rationale = _scalar(raw, mapping.rationale_field, "--rationale_field").strip()
                if rationale:
                    example = example.replace(rationales=(rationale,), teacher_meta={"source": "user"})
        except FieldError as error:
            raise DataError.from_field_error(error, path, line) from None
        yield example

