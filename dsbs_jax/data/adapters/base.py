"""Raw record + optional teacher output -> `schema.Example`, shared by every adapter."""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Optional

from dsbs_jax.data import schema
from dsbs_jax.data.errors import DataError, FieldError
from dsbs_jax.data.specs import DatasetSpec


def attach_teacher_output(example: schema.Example, spec: DatasetSpec, output: Optional[str], *,
                          filter_labels: bool = False,
                          extra_meta: Optional[Mapping[str, Any]] = None) -> schema.Example:
    """Parses one teacher output and stores it on `example`.

    By default (as in the paper) the teacher label is kept even when it is outside the label
    set: `teacher_label` is the label mapped onto the label set when that works, else the text
    the reference rule extracts (`raw_label`), else None. With `filter_labels` a failed parse
    leaves `teacher_label` None and no rationale. Either way `teacher_meta` records
    `parse_failure`, `parse_notes`, `raw_label` and the sha256 of the raw output, which the
    manifest's counts are computed from.
    """
    parsed = spec.parse_teacher(output, choices=example.choices)
    if parsed.ok:
        teacher_label, rationales = parsed.label, (parsed.rationale,) if parsed.rationale else ()
    elif filter_labels:
        teacher_label, rationales = None, ()
    else:
        teacher_label, rationales = parsed.raw_label, (parsed.rationale,) if parsed.rationale else ()
    meta = dict(example.teacher_meta)
    meta.update(extra_meta or {})
    meta.update({
        "parse_failure": parsed.failure_reason,
        "parse_notes": list(parsed.notes),
        "raw_label": parsed.raw_label,
        "output_sha256": hashlib.sha256((output or "").encode("utf-8")).hexdigest(),
    })
    return example.replace(teacher_label=teacher_label, rationales=rationales, teacher_meta=meta)


def example_from_raw(spec: DatasetSpec, raw: Mapping[str, Any], *, split: str, example_id: str,
                     path: Optional[str] = None, line: Optional[int] = None) -> schema.Example:
    """Formats one raw record with `spec`; bad fields raise `DataError` at `path:line`."""
    try:
        return schema.Example(
            id=example_id, dataset=spec.name, split=split, input=spec.format_input(raw),
            label=spec.gold_label(raw), choices=spec.choices(raw))
    except FieldError as error:
        raise DataError.from_field_error(error, path, line) from None


def record_id(raw: Mapping[str, Any], id_field: Optional[str], fallback: str, path: Optional[str],
              line: Optional[int]) -> str:
    """The record's own id from `id_field`, or `fallback` (e.g. "cqa-train-17") when there is none."""
    if not id_field:
        return fallback
    value = raw.get(id_field) if isinstance(raw, Mapping) else None
    if value is None:
        raise DataError(path, line, id_field, f"missing id; the record has fields {sorted(raw)}",
                        fix=f"add it, or pass another --id_field (or none, to number lines as {fallback!r})")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DataError(path, line, id_field, f"expected a non-empty string or integer id, found {value!r:.60}")
    return str(value)


class IdChecker:
    """Remembers ids to report a duplicate with both lines."""

    def __init__(self, path: Optional[str], field: Optional[str]):
        self._first: dict[str, Any] = {}
        self._path, self._field = path, field

    def check(self, example_id: str, line: Optional[int]) -> None:
        if example_id in self._first:
            raise DataError(self._path, line, self._field or "id",
                            f"duplicate id {example_id!r} (first seen on line {self._first[example_id]})",
                            fix="ids must be unique within a split; fix the data or choose another --id_field")
        self._first[example_id] = line


def _gfile():
    from dsbs_jax.data import fs  # tf.io.gfile (imported lazily) makes gs:// sources work like local ones

    return fs


def path_exists(path: str) -> bool:
    return _gfile().exists(path)


def is_dir(path: str) -> bool:
    return _gfile().isdir(path)


def list_dir(path: str) -> list[str]:
    return sorted(name.rstrip("/") for name in _gfile().listdir(path))


def join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def read_text(path: str) -> str:
    """The file's UTF-8 text; `DataError` (naming the file) when it is missing or undecodable."""
    try:
        with _gfile().GFile(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, None, None, f"cannot read file: not UTF-8 text ({error})") from None
    except Exception as error:  # tf.errors.* for missing files or permissions
        message = getattr(error, "message", None) or str(error)
        raise DataError(path, None, None, f"cannot read file: {message}") from None
