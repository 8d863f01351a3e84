"""Errors that say where bad data is and how to fix it.

`DataError` is what every adapter and writer raises for bad input: it names the file, the
1-based line (or CSV row), the field, what was expected versus found, and the flag that fixes
it, e.g.

    cqa_train.json:17: field 'answer': expected one of the 5 choices, found 'xyz'
    (fix: correct the record or drop it)

`FieldError` is raised by the per-dataset functions in `specs.py`, which see one raw record
but not where it came from; adapters catch it and re-raise it as a `DataError` with the path
and line filled in.
"""
from __future__ import annotations

import os
from typing import Optional


class FieldError(ValueError):
    """A bad field in one raw record, before the adapter knows the file and line."""

    def __init__(self, field: Optional[str], message: str, fix: Optional[str] = None):
        self.field = field
        self.message = message
        self.fix = fix
        super().__init__(f"field {field!r}: {message}" if field else message)


class DataError(ValueError):
    """Bad input data, located to file, line and field.

    Attributes:
      path: the offending file (shown as its basename, full path kept here).
      line: 1-based line (JSONL), row (CSV, header = line 1) or record index; None for the
        whole file.
      field: the offending field, or None when the problem is not a single field.
      message: what was expected and what was found.
      fix: the flag or action that fixes it.
    """

    def __init__(self, path: Optional[str], line: Optional[int], field: Optional[str], message: str,
                 fix: Optional[str] = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.message = message
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        where = os.path.basename(self.path) if self.path else "<input>"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: "
        if self.field:
            text += f"field {self.field!r}: "
        text += self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return text

    @classmethod
    def from_field_error(cls, error: FieldError, path: Optional[str], line: Optional[int]) -> "DataError":
        return cls(path, line, error.field, error.message, error.fix)
