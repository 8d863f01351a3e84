"""The Distilling step-by-step data release: JSON lines plus PaLM outputs in JSON arrays.

    {src}/{dataset}/{dataset}_{split}.json       one JSON object per line
    {src}/{dataset}/llm/{split}_CoT_{i}.json     JSON array: outputs for lines
                                                 [i * per_file, (i + 1) * per_file), in order

`src` may also be the dataset folder itself. Ids are the data's own (`id` for CQA, `uid` for
ANLI) or `{dataset}-{split}-{line}` (1-based line) where the data has none (e-SNLI).
"""
from __future__ import annotations

import json
from typing import Iterator, Optional

from dsbs_jax.data import schema
from dsbs_jax.data.adapters.base import (IdChecker, attach_teacher_output, example_from_raw, is_dir, join, list_dir,
                                         path_exists, read_text, record_id)
from dsbs_jax.data.adapters.lines import DEFAULT_MAX_FIELD_BYTES, iter_json_lines
from dsbs_jax.data.errors import DataError
from dsbs_jax.data.specs import DatasetSpec, get_spec

TEACHER = {"model": "PaLM-540B", "method": "few-shot chain-of-thought",
           "source": "distilling-step-by-step data release"}


def release_files(src: str, dataset: str, split: str) -> tuple[str, list[str]]:
    """(inputs file, teacher output files in order) for one split; outputs may be []."""
    root = join(src, dataset) if is_dir(join(src, dataset)) else src
    inputs = join(root, f"{dataset}_{split}.json")
    if not path_exists(inputs):
        found = [name for name in list_dir(root) if name.endswith(".json")] if is_dir(root) else []
        raise DataError(inputs, None, None, f"file not found; {root} has {found or 'no .json files'}",
                        fix="point --src at the release root (or its dataset folder) and check --dataset/--splits")
    outputs, index = [], 0
    while path_exists(join(root, "llm", f"{split}_CoT_{index}.json")):
        outputs.append(join(root, "llm", f"{split}_CoT_{index}.json"))
        index += 1
    return inputs, outputs


def read_json_lines(path: str, max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES) -> list[tuple[int, dict]]:
    """(1-based line, object) for every line; raises `DataError` at the first bad line."""
    return list(iter_json_lines(path, max_field_bytes))


def read_teacher_outputs(files: list[str], per_file: int) -> list[str]:
    """Concatenates the output arrays, checking each file's shape."""
    outputs: list[str] = []
    for position, path in enumerate(files):
        try:
            array = json.loads(read_text(path))
        except json.JSONDecodeError as error:
            raise DataError(path, error.lineno, None,
                            f"not valid JSON ({error.msg}); the file may be truncated") from None
        if not isinstance(array, list):
            raise DataError(path, None, None, f"expected a JSON array of strings, found {type(array).__name__}")
        for index, item in enumerate(array):
            if not isinstance(item, str):
                raise DataError(path, None, f"[{index}]",
                                f"expected a string, found {type(item).__name__} {item!r:.60}")
        last = position == len(files) - 1
        if (len(array) != per_file and not last) or len(array) > per_file or not array:
            raise DataError(path, None, None, f"expected {per_file} outputs per file (fewer only in the last "
                            f"file), found {len(array)}", fix="check that no output file is missing or truncated")
        outputs.extend(array)
    return outputs


def read_release(src: str, dataset: str, split: str, *, spec: Optional[DatasetSpec] = None,
                 filter_labels: bool = False, limit: Optional[int] = None,
                 max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES) -> Iterator[schema.Example]:
    """Yields the split's examples with their parsed PaLM outputs.

    Args:
      src: release root (holding `{dataset}/`) or the dataset folder.
      dataset: "cqa", "esnli", "anli1" (any registered spec with the release layout).
      split: "train", "valid" or "test".
      spec: defaults to `get_spec(dataset)`.
      filter_labels: drop teacher labels/rationales that fail to parse (see
        `attach_teacher_output`); off by default, as in the paper.
      limit: only the first `limit` examples (the teacher-output count is still checked
        against the whole file).

    Raises:
      DataError: bad lines, fields, ids, or a teacher-output count that differs from the
        number of inputs. File-level problems (JSON, counts) are found before the first
        example is yielded, record-level ones when the record is reached; `write_split`
        leaves nothing behind either way.
    """
    spec = spec or get_spec(dataset)
    if spec.combines:
        yield from _read_combined(src, spec, split, filter_labels=filter_labels, limit=limit,
                                  max_field_bytes=max_field_bytes)
        return
    inputs, output_files = release_files(src, dataset, split)
    records = read_json_lines(inputs, max_field_bytes)
    outputs = read_teacher_outputs(output_files, spec.outputs_per_file) if output_files else None
    if outputs is not None and len(outputs) != len(records):
        raise DataError(output_files[-1], None, None,
                        f"{len(outputs)} teacher outputs in {len(output_files)} file(s) for {len(records)} inputs "
                        f"in {inputs.rsplit('/', 1)[-1]}; expected one output per input line",
                        fix="restore the missing llm/*_CoT_*.json files or the truncated input file")
    ids = IdChecker(inputs, spec.id_field)
    for index, (line, raw) in enumerate(records[:limit] if limit is not None else records):
        example_id = record_id(raw, spec.id_field, f"{dataset}-{split}-{line}", inputs, line)
        ids.check(example_id, line)
        example = example_from_raw(spec, raw, split=split, example_id=example_id, path=inputs, line=line)
        if outputs is not None:
            example = attach_teacher_output(example, spec, outputs[index], filter_labels=filter_labels,
                                            extra_meta={"model": TEACHER["model"]})
        yield example


def _read_combined(src: str, spec: DatasetSpec, split: str, *, filter_labels: bool,
                   limit: Optional[int], max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES) -> Iterator[schema.Example]:
    """The examples of a dataset built from others (e.g. SVAMP + ASDiv train), in source order."""
    sources = spec.combines.get(split)
    if not sources:
        raise DataError(src, None, None, f"dataset {spec.name!r} has no split {split!r}; it combines "
                        f"{dict(spec.combines)}", fix="pass --splits " + " ".join(spec.combines))
    count = 0
    for source in sources:
        for example in read_release(src, source, split, filter_labels=filter_labels, max_field_bytes=max_field_bytes):
            if limit is not None and count >= limit:
                return
            count += 1
            # Ids stay the source's own ("svamp-train-3", "asdiv-train-3"): unique across sources.
            yield example.replace(dataset=spec.name)
