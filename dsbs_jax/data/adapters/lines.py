"""Streaming line readers for JSONL and CSV input, with a per-field size limit.

A file is read in 1 MiB chunks, one line at a time, so a 60 MB line costs a few MB of memory
before it is refused instead of the whole file's text, its split lines and their parsed
objects at once. Every error names the file and 1-based line:

    train.jsonl:7: field 'context': value is over 1048576 bytes (fix: shorten it or raise --max_field_bytes)
    train.jsonl:3: not UTF-8 text at column 41 (byte 0xff) (fix: re-save the file as UTF-8)

Lines no longer than the limit cannot hold an oversized field and skip the field scan, so
ordinary data pays nothing for the check.
"""
from __future__ import annotations

import csv
import json
import re
from typing import Callable, Iterator, Optional

from dsbs_jax.data.errors import DataError

DEFAULT_MAX_FIELD_BYTES = 1 << 20  # 1 MiB: far above any real question, context or rationale
_CHUNK = 1 << 20
_FIX = "shorten it or raise --max_field_bytes"
_OUTSIDE = re.compile(rb'["{}\[\],:]')
_INSIDE = re.compile(rb'["\\]')


def _gfile():
    from dsbs_jax.data import fs  # tf.io.gfile (imported lazily) makes gs:// sources work like local ones

    return fs


class _FieldScanner:
    """Byte extent of each top-level field of one JSON-object line, fed chunk by chunk."""

    def __init__(self, path: str, line: int, limit: int):
        self.path, self.line, self.limit = path, line, limit
        self.offset = 0  # bytes of the line seen so far
        self.in_string = self.skip_next = False
        self.depth = 0
        self.expect_key = False
        self.key_start: Optional[int] = None  # absolute offset of the key being read
        self.partial_key = b""  # its bytes from earlier chunks
        self.key = b""
        self.value_start: Optional[int] = None
        self.is_object: Optional[bool] = None  # whether the line's top-level value is an object

    def _fail(self, size_text: str) -> None:
        key = self.key.decode("utf-8", "replace")
        raise DataError(self.path, self.line, key or None, f"value is {size_text} bytes, over the limit of "
                        f"{self.limit} (--max_field_bytes)", fix=_FIX)

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        if self.skip_next and n:
            pos, self.skip_next = 1, False
        while pos < n:
            match = (_INSIDE if self.in_string else _OUTSIDE).search(data, pos)
            if match is None:
                break
            at = match.start()
            char, absolute, pos = data[at], self.offset + at, at + 1
            if self.in_string:
                if char == 0x5C:  # backslash: the next byte is escaped
                    if pos < n:
                        pos += 1
                    else:
                        self.skip_next = True
                    continue
                self.in_string = False
                if self.key_start is not None:  # a key just ended
                    self.key = (self.partial_key + data[max(0, self.key_start - self.offset):at])[:200]
                    self.key_start, self.partial_key = None, b""
                continue
            if char == 0x22:  # opening quote
                self.in_string = True
                if self.depth == 1 and self.expect_key:
                    self.key_start, self.expect_key = absolute + 1, False
            elif char in (0x7B, 0x5B):  # { [
                self.depth += 1
                if self.depth == 1:
                    self.expect_key = char == 0x7B
                    if self.is_object is None:
                        self.is_object = char == 0x7B
            elif char in (0x7D, 0x5D):  # } ]
                if self.depth == 1:
                    self._end_value(absolute)
                self.depth -= 1
            elif char == 0x3A and self.depth == 1:  # :
                self.value_start = absolute + 1
            elif char == 0x2C and self.depth == 1:  # ,
                self._end_value(absolute)
                self.expect_key = True
        if self.key_start is not None:  # a key that goes on in the next chunk
            self.partial_key = (self.partial_key + data[max(0, self.key_start - self.offset):])[:200]
        self.offset += n
        if self.value_start is not None and self.offset - self.value_start > self.limit:
            self._fail(f"at least {self.offset - self.value_start}")
        if not self.is_object and self.offset > self.limit:
            self._fail(f"at least {self.offset}")  # not an object: the whole line is one value

    def _end_value(self, absolute: int) -> None:
        if self.value_start is not None and absolute - self.value_start > self.limit:
            self._fail(str(absolute - self.value_start))
        self.value_start = None


def _raw_lines(path: str, limit: int, on_long_line: Callable[[int, list[bytes]], "_FieldScanner"]
               ) -> Iterator[tuple[int, bytes]]:
    """(1-based line, bytes without the newline). When a line grows past `limit` bytes,
    `on_long_line(line, pieces so far)` either raises `DataError` or returns a scanner that is
    fed the rest of the line (and raises once a field is too long)."""
    gfile = _gfile()
    try:
        handle = gfile.GFile(path, "rb")
        chunk = handle.read(_CHUNK)
    except Exception as error:  # tf.errors.* for missing files or permissions
        message = getattr(error, "message", None) or str(error)
        raise DataError(path, None, None, f"cannot read file: {message}") from None
    number, parts, size, scanner = 1, [], 0, None
    with handle:
        while chunk:
            start = 0
            while True:
                end = chunk.find(b"\n", start)
                piece = chunk[start:] if end < 0 else chunk[start:end]
                size += len(piece)
                if scanner is not None:
                    scanner.feed(piece)
                parts.append(piece)
                if scanner is None and size > limit:
                    scanner = on_long_line(number, parts)
                if end < 0:
                    break
                yield number, b"".join(parts)
                number, parts, size, scanner = number + 1, [], 0, None
                start = end + 1
            chunk = handle.read(_CHUNK)
    if size:
        yield number, b"".join(parts)


def _decode(path: str, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        column = len(raw[:error.start].decode("utf-8", "replace")) + 1
        raise DataError(path, number, None, f"not UTF-8 text at column {column} (byte 0x{raw[error.start]:02x})",
                        fix="re-save the file as UTF-8") from None


def iter_json_lines(path: str, max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES) -> Iterator[tuple[int, dict]]:
    """(1-based line, object) for every line; `DataError` at the first bad line or oversized field."""
    def scan(number: int, parts: list[bytes]) -> _FieldScanner:
        scanner = _FieldScanner(path, number, max_field_bytes)
        for piece in parts:
            scanner.feed(piece)
        return scanner

    seen = False
    for number, raw in _raw_lines(path, max_field_bytes, scan):
        text = _decode(path, number, raw)
        if not text.strip():
            raise DataError(path, number, None, "empty line; expected one JSON object per line (teacher outputs "
                            "are matched to inputs by line, so blank lines are not skipped)")
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(path, number, None, f"not valid JSON ({error.msg} at column {error.colno}); "
                            "the line may be truncated") from None
        if not isinstance(record, dict):
            raise DataError(path, number, None, f"expected a JSON object, found {type(record).__name__}")
        seen = True
        yield number, record
    if not seen:
        raise DataError(path, None, None, "file is empty; expected one JSON object per line")


def iter_csv_rows(path: str, required: tuple[str, ...], max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
                  ) -> Iterator[tuple[int, dict]]:
    """(line of the row's end, {column: value}) for every data row of a CSV file with a header.

    Physical lines are read one at a time (a field may span lines inside quotes); csv's own
    field limit bounds a field that spans many lines.
    """
    state = {"line": 0, "header": None}
    line_limit = 8 * max_field_bytes  # a row holds several fields; its longest one is found below

    def long_line(number: int, parts: list[bytes]) -> _FieldScanner:
        prefix = b"".join(parts)[:line_limit].decode("utf-8", "replace")
        row = next(csv.reader([prefix]), [""])
        header = state["header"] or []
        column = header[len(row) - 1] if 0 < len(row) <= len(header) else None
        raise DataError(path, number, column, f"line is over {line_limit} bytes (8 x --max_field_bytes); the "
                        f"field at column {len(row)} is still going", fix=_FIX)

    def text_lines() -> Iterator[str]:
        for number, raw in _raw_lines(path, line_limit, long_line):
            state["line"] = number
            yield _decode(path, number, raw) + "\n"

    previous_limit = csv.field_size_limit()
    csv.field_size_limit(line_limit)
    reader = csv.reader(text_lines())
    try:
        header = state["header"] = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(path, None, None, "file is empty; expected a header row naming the columns")
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise DataError(path, 1, duplicated[0], f"column appears {header.count(duplicated[0])} times in "
                            f"the header {header}", fix="rename the duplicated columns")
        for name in required:
            if name not in header:
                raise DataError(path, 1, name, f"column missing from the CSV header {header}",
                                fix="rename the column or change --template/--input_fields/--label_field/"
                                    "--rationale_field/--id_field")
        for row in reader:
            if not row:
                continue  # csv writes nothing for blank lines between records
            if len(row) != len(header):
                raise DataError(path, state["line"], None, f"expected {len(header)} columns "
                                f"({','.join(header)}), found {len(row)}", fix="quote fields that contain commas")
            for name, value in zip(header, row):
                size = len(value.encode("utf-8"))
                if size > max_field_bytes:
                    raise DataError(path, state["line"], name, f"value is {size} bytes, over the limit of "
                                    f"{max_field_bytes} (--max_field_bytes)", fix=_FIX)
            yield state["line"], dict(zip(header, row))
    except csv.Error as error:
        if "field larger than field limit" in str(error):
            raise DataError(path, state["line"], None, f"a field is over the limit of {max_field_bytes} bytes "
                            "(--max_field_bytes)", fix=_FIX) from None
        raise DataError(path, state["line"], None, f"malformed CSV: {error}") from None
    finally:
        csv.field_size_limit(previous_limit)
