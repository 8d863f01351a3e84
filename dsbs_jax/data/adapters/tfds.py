"""TensorFlow Datasets already on disk (never downloaded here).

    examples = read_tfds("esnli", "valid", data_dir="/data/tensorflow_datasets")

The dataset must have been prepared beforehand (`tfds build esnli --data_dir ...` on a
machine with internet access, or copied); this adapter only reads `data_dir`. Known datasets
map our split names and field names onto the TFDS ones; any other prepared TFDS dataset whose
features match a spec's fields works with an explicit `tfds_name`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Optional

from dsbs_jax.data import schema
from dsbs_jax.data.adapters.base import IdChecker, example_from_raw, record_id
from dsbs_jax.data.errors import DataError
from dsbs_jax.data.specs import DatasetSpec, get_spec


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """Where one of our datasets lives in TFDS.

    Attributes:
      name: TFDS name (with config), e.g. "anli/r1".
      splits: our split name -> TFDS split name.
      renames: TFDS feature name -> the raw field name our spec reads.
    """

    name: str
    splits: Mapping[str, str]
    renames: Mapping[str, str] = dataclasses.field(default_factory=dict)


SOURCES = {
    "esnli": TfdsSource("esnli", {"train": "train", "valid": "validation", "test": "test"}),
    "anli1": TfdsSource("anli/r1", {"train": "train", "valid": "validation", "test": "test"},
                        {"context": "premise"}),
    # The paper's CQA test split is CoS-E's validation split.
    "cqa": TfdsSource("cos_e", {"train": "train", "test": "validation"}),
}


def _decode(value: Any) -> Any:
    """numpy/bytes features -> plain Python (str, int, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _decode(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def read_tfds(dataset: str, split: str, *, data_dir: str, tfds_name: Optional[str] = None,
              tfds_split: Optional[str] = None, spec: Optional[DatasetSpec] = None) -> Iterator[schema.Example]:
    """Yields gold examples of a prepared TFDS dataset under `data_dir`.

    Args:
      dataset: our dataset name (selects the spec and the default TFDS source).
      split: our split name ("train", "valid", "test").
      data_dir: the TFDS data directory holding the prepared dataset.
      tfds_name: overrides the TFDS name (e.g. a dataset you prepared yourself).
      tfds_split: overrides the TFDS split name.
      spec: defaults to `get_spec(dataset)`.
    """
    import tensorflow_datasets as tfds

    spec = spec or get_spec(dataset)
    source = SOURCES.get(dataset, TfdsSource(tfds_name or dataset, {}))
    name = tfds_name or source.name
    tfds_split = tfds_split or source.splits.get(split, split)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # TFDS raises several types for "not registered and not on disk"
        raise DataError(data_dir, None, None, f"no TFDS dataset {name!r} readable here: {error}".split("\n")[0],
                        fix="prepare it with `tfds build` where there is internet access, then pass that "
                            "directory as --src (and --tfds_name if it is not the default)") from None
    if not builder.is_prepared():
        raise DataError(data_dir, None, None, f"TFDS dataset {name!r} (version {builder.version}) is not prepared "
                        f"under {data_dir}; this adapter never downloads",
                        fix=f"run `tfds build {name} --data_dir {data_dir}` where there is internet access")
    if tfds_split not in builder.info.splits:
        raise DataError(data_dir, None, None, f"TFDS dataset {name!r} has no split {tfds_split!r}; it has "
                        f"{sorted(builder.info.splits)}", fix="--splits (or --tfds_split)")
    where = f"{name}[{tfds_split}]"
    ids = IdChecker(where, spec.id_field)
    records = tfds.as_numpy(builder.as_dataset(split=tfds_split, shuffle_files=False))
    for number, record in enumerate(records, start=1):
        raw = {source.renames.get(k, k): v for k, v in _decode(record).items()}
        example_id = record_id(raw, spec.id_field, f"{dataset}-{split}-{number}", where, number)
        ids.check(example_id, number)
        yield example_from_raw(spec, raw, split=split, example_id=example_id, path=where, line=number)
