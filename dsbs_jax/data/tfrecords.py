"""Sharded TFRecords of `schema.Example`s plus the manifest that makes them readable.

Layout (docs/architecture.md):

    {dataset_dir}/manifest.json
    {dataset_dir}/{split}.tfrecord-{i:05d}-of-{n:05d}

Writes are all-or-nothing per split: shards go to `*.tmp` files first, are renamed only once
every example was written, and the manifest is written last (itself via a temp file). If
anything fails (a bad record raising `DataError` in the middle of the input, a full disk),
the temp files are deleted and the previous complete output of that split is untouched.
Readers take the shard list from the manifest, never from a glob of a directory that may be
half written. Paths go through `fs` (`tf.io.gfile` for URLs), so `gs://` works.

    manifest = write_split("/data/cqa", "train", examples, num_shards=4)
    for ex in read_split("/data/cqa", "train", verify=True): ...
"""
from __future__ import annotations

import collections
import hashlib
import json
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from dsbs_jax.data import schema
from dsbs_jax.data.errors import DataError
from dsbs_jax.data.labels import labels_match

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def _gfile():
    from dsbs_jax.data import fs  # os for local paths, tf.io.gfile (imported lazily) for URLs

    return fs


def _join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}.tfrecord-{index:05d}-of-{num_shards:05d}"


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with _gfile().GFile(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(dataset_dir: str) -> dict:
    """The dataset's manifest; a clear error when the directory was never completely written."""
    path = _join(dataset_dir, MANIFEST)
    gfile = _gfile()
    if not gfile.exists(dataset_dir):
        raise FileNotFoundError(f"No dataset directory {dataset_dir} (so no {MANIFEST}): check the path (--src, "
                                "DSBS_DATA_ROOT) or write it with `dsbs import ... --out` first.")
    if not gfile.exists(path):
        raise FileNotFoundError(
            f"No {MANIFEST} in {dataset_dir}: it is written last, so the import or rationale job that "
            "writes this directory never finished. Re-run `dsbs import ... --out` (or `dsbs rationales`).")
    with gfile.GFile(path, "r") as f:
        manifest = json.load(f)
    version = manifest.get("schema_version", 0)
    if version > schema.SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version} is newer than this code's {schema.SCHEMA_VERSION}; "
                         "upgrade dsbs-jax to read it.")
    return manifest


def _write_manifest(path: str, manifest: dict) -> None:
    """Atomic manifest write: readers see the old manifest or the new one, never half of one."""
    gfile = _gfile()
    with gfile.GFile(path + ".tmp", "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True))
    gfile.rename(path + ".tmp", path, overwrite=True)


def _split_entry(dataset_dir: str, split: str) -> dict:
    splits = read_manifest(dataset_dir).get("splits", {})
    if split not in splits:
        raise KeyError(f"Split {split!r} is not in {_join(dataset_dir, MANIFEST)}; it has {sorted(splits)}. "
                       "Import it with `dsbs import --splits ...`.")
    return splits[split]


def split_files(dataset_dir: str, split: str) -> list[str]:
    """Full paths of the split's shards, in order, as listed by the manifest."""
    return [_join(dataset_dir, name) for name in _split_entry(dataset_dir, split)["files"]]


def verify_split(dataset_dir: str, split: str) -> None:
    """Raises `DataError` if a shard is missing or its sha256 differs from the manifest."""
    entry = _split_entry(dataset_dir, split)
    gfile = _gfile()
    for name in entry["files"]:
        path = _join(dataset_dir, name)
        if not gfile.exists(path):
            raise DataError(path, None, None, "shard listed in manifest.json is missing",
                            fix="re-run the import that wrote this directory")
        found = sha256_file(path)
        if found != entry["sha256"][name]:
            raise DataError(path, None, None, f"sha256 expected {entry['sha256'][name]}, found {found}",
                            fix="the shard changed after it was written; re-run the import")


def read_split(dataset_dir: str, split: str, verify: bool = False) -> Iterator[schema.Example]:
    """Yields the split's examples in shard order (checksums checked first if `verify`)."""
    if verify:
        verify_split(dataset_dir, split)
    for path in split_files(dataset_dir, split):
        yield from read_records(path)


def read_records(path: str) -> Iterator[schema.Example]:
    """Yields the examples of one TFRecord file."""
    import tensorflow as tf

    records = tf.data.TFRecordDataset(path).as_numpy_iterator()
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except (tf.errors.DataLossError, tf.errors.NotFoundError) as error:
            raise DataError(path, None, None, f"unreadable shard: {error.message.split(' [Op')[0]}",
                            fix="re-run the import that wrote it; read with verify=True to check sha256") from None
        yield schema.from_tf_example_bytes(record)


def _metric_of(dataset: str) -> str:
    from dsbs_jax.data import specs

    try:
        return specs.get_spec(dataset).metric
    except KeyError:
        return "accuracy"


class _Stats:
    """Counts for the manifest, accumulated while writing."""

    def __init__(self):
        self.metric: Optional[str] = None  # the dataset's, from its first example
        self.num_examples = 0
        self.with_gold = 0
        self.with_teacher = 0
        self.with_teacher_label = 0
        self.teacher_and_gold = 0
        self.parsed = 0
        self.agree = 0
        self.with_rationale = 0
        self.failures: collections.Counter = collections.Counter()
        self.notes: collections.Counter = collections.Counter()
        self.raw_parsed = 0
        self.raw_agree = 0
        self.has_raw = False

    def add(self, example: schema.Example) -> None:
        if self.metric is None:
            self.metric = _metric_of(example.dataset)
        self.num_examples += 1
        self.with_gold += example.label is not None
        self.with_rationale += bool(example.rationale)
        meta = example.teacher_meta or {}
        # An example went through a teacher if it has a teacher label or a recorded parse status
        # (`adapters.attach_teacher_output` records one); user-supplied rationales alone do not count.
        if not (example.teacher_label is not None or "parse_failure" in meta):
            return
        self.with_teacher += 1
        self.with_teacher_label += example.teacher_label is not None
        failure = meta.get("parse_failure")
        if failure:
            self.failures[failure] += 1
        else:
            self.parsed += 1
        self.notes.update(meta.get("parse_notes", ()))
        self.teacher_and_gold += example.label is not None
        self.agree += example.label is not None and labels_match(self.metric, example.teacher_label, example.label)
        if "raw_label" in meta:  # the reference implementation's rule, for comparison with the paper
            self.has_raw = True
            self.raw_parsed += meta["raw_label"] is not None
            self.raw_agree += example.label is not None and labels_match(self.metric, meta["raw_label"], example.label)

    def merge(self, other: "_Stats") -> "_Stats":
        """Adds another accumulator's counts (for Beam combiners, which build stats in pieces)."""
        for name, value in vars(other).items():
            if name == "has_raw":
                self.has_raw = self.has_raw or value
            elif name == "metric":  # the dataset's, not a count
                self.metric = self.metric or value
            elif isinstance(value, collections.Counter):
                getattr(self, name).update(value)
            else:
                setattr(self, name, getattr(self, name) + value)
        return self

    def entry(self) -> dict:
        def frac(count: int, total: int) -> Optional[float]:
            return round(count / total, 6) if total else None

        entry = {
            "num_examples": self.num_examples,
            "num_with_gold_label": self.with_gold,
            "num_with_rationale": self.with_rationale,
            "num_with_teacher_output": self.with_teacher,
            "num_with_teacher_label": self.with_teacher_label,
            "parse_failures": dict(sorted(self.failures.items())),
            "parse_notes": dict(sorted(self.notes.items())),
            "parse_rate": frac(self.parsed, self.with_teacher),
            "teacher_gold_agreement": frac(self.agree, self.teacher_and_gold),
        }
        if self.has_raw:
            entry["reference_rules"] = {"parse_rate": frac(self.raw_parsed, self.with_teacher),
                                        "teacher_gold_agreement": frac(self.raw_agree, self.teacher_and_gold)}
        return entry


def write_split(dataset_dir: str, split: str, examples: Iterable[schema.Example], num_shards: int = 1,
                manifest_extra: Optional[Mapping[str, Any]] = None,
                split_extra: Optional[Mapping[str, Any]] = None) -> dict:
    """Writes one split atomically and records it in the manifest.

    Args:
      dataset_dir: `{data_root}/{dataset}` (local or gs://); created if absent.
      split: split name, e.g. "train".
      examples: the examples, consumed once; ids must be unique. If iterating raises, nothing
        of this call is left behind and the error propagates.
      num_shards: examples go round-robin to this many shards.
      manifest_extra: JSON-serialisable top-level manifest entries (e.g. {"teacher": {...}});
        never put secrets here.
      split_extra: JSON-serialisable entries added to this split's manifest entry.

    Returns:
      This split's manifest entry (counts, files, sha256, parse stats).

    One writer per `dataset_dir` at a time: the manifest update is read-modify-write.
    """
    import tensorflow as tf

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, found {num_shards} (--num_shards)")
    if "/" in split or not split:
        raise ValueError(f"split names may not be empty or contain '/', found {split!r}")
    gfile = _gfile()
    gfile.makedirs(dataset_dir)
    names = [shard_name(split, i, num_shards) for i in range(num_shards)]
    temps = [_join(dataset_dir, name + ".tmp") for name in names]
    writers = []
    stats, seen, dataset_names = _Stats(), set(), set()
    try:
        writers = [tf.io.TFRecordWriter(path) for path in temps]
        for index, example in enumerate(examples):
            if example.id in seen:
                raise DataError(None, None, "id", f"duplicate id {example.id!r} in split {split!r} (example {index})",
                                fix="ids must be unique within a split")
            seen.add(example.id)
            dataset_names.add(example.dataset)
            writers[index % num_shards].write(schema.to_tf_example_bytes(example))
            stats.add(example)
        for writer in writers:
            writer.close()
        checksums = {name: sha256_file(temp) for name, temp in zip(names, temps)}
    except BaseException:
        for writer in writers:
            writer.close()
        for temp in temps:
            if gfile.exists(temp):
                gfile.remove(temp)
        raise

    manifest_path = _join(dataset_dir, MANIFEST)
    manifest = read_manifest(dataset_dir) if gfile.exists(manifest_path) else {}
    old_files = set(manifest.get("splits", {}).get(split, {}).get("files", ()))
    for name, temp in zip(names, temps):
        gfile.rename(temp, _join(dataset_dir, name), overwrite=True)
    for stale in old_files - set(names):  # an earlier write with another --num_shards
        if gfile.exists(_join(dataset_dir, stale)):
            gfile.remove(_join(dataset_dir, stale))
    return _record_in_manifest(dataset_dir, split, manifest, stats, dataset_names, names, checksums,
                               manifest_extra, split_extra)


def record_split(dataset_dir: str, split: str, examples: Iterable[schema.Example], files: Sequence[str],
                 manifest_extra: Optional[Mapping[str, Any]] = None,
                 split_extra: Optional[Mapping[str, Any]] = None) -> dict:
    """Records shard files that are already in place (e.g. one per host) as a split in the manifest.

    `examples` are the files' contents (for the counts); checksums are computed from the files.
    Returns the merged manifest.
    """
    stats, dataset_names = _Stats(), set()
    for example in examples:
        stats.add(example)
        dataset_names.add(example.dataset)
    checksums = {name: sha256_file(_join(dataset_dir, name)) for name in files}
    gfile = _gfile()
    manifest_path = _join(dataset_dir, MANIFEST)
    manifest = read_manifest(dataset_dir) if gfile.exists(manifest_path) else {}
    _record_in_manifest(dataset_dir, split, manifest, stats, dataset_names, list(files), checksums,
                        manifest_extra, split_extra)
    return read_manifest(dataset_dir)


def _record_in_manifest(dataset_dir, split, manifest, stats, dataset_names, names, checksums, manifest_extra,
                        split_extra) -> dict:
    entry = {**stats.entry(), "files": names, "sha256": checksums, **dict(split_extra or {})}
    manifest["schema_version"] = schema.SCHEMA_VERSION
    manifest["dataset"] = (sorted(dataset_names)[0] if len(dataset_names) == 1
                           else manifest.get("dataset", dataset_dir.rstrip("/").rsplit("/", 1)[-1]))
    manifest.update(dict(manifest_extra or {}))
    manifest.setdefault("splits", {})[split] = entry
    manifest["splits"] = dict(sorted(manifest["splits"].items()))
    _write_manifest(_join(dataset_dir, MANIFEST), manifest)
    return entry


def _replace_dir(staging_dir: str, dataset_dir: str, staged: dict) -> dict:
    gfile = _gfile()
    if "://" in dataset_dir:
        return _replace_files(staging_dir, dataset_dir, staged)
    if not gfile.exists(dataset_dir):
        gfile.rename(staging_dir, dataset_dir)
        return staged
    parent, name = dataset_dir.rstrip("/").rsplit("/", 1) if "/" in dataset_dir.rstrip("/") else (".", dataset_dir)
    aside = f"{parent}/.{name}.replaced-{hashlib.sha256(staging_dir.encode()).hexdigest()[:8]}"
    gfile.rename(dataset_dir, aside)  # the two renames are the only window without a dataset
    try:
        gfile.rename(staging_dir, dataset_dir)
    except BaseException:
        gfile.rename(aside, dataset_dir)  # put the old dataset back
        raise
    remove_dir(aside)
    return staged


def _replace_files(staging_dir: str, dataset_dir: str, staged: dict) -> dict:
    """Object stores have no directory rename: the files move one by one, the manifest last (so
    readers see the old dataset or the new one), then whatever the new one lacks is deleted."""
    gfile = _gfile()
    gfile.makedirs(dataset_dir)
    old = {name.rstrip("/") for name in gfile.listdir(dataset_dir)}
    new = sorted(name.rstrip("/") for name in gfile.listdir(staging_dir))
    for name in [n for n in new if n != MANIFEST] + [MANIFEST]:
        gfile.rename(_join(staging_dir, name), _join(dataset_dir, name), overwrite=True)
    for name in sorted(old - set(new)):
        path = _join(dataset_dir, name)
        gfile.rmtree(path) if gfile.isdir(path) else gfile.remove(path)
    remove_dir(staging_dir)
    return staged


def remove_dir(path: str) -> None:
    """Deletes a (staging) directory if it exists."""
    if _gfile().exists(path):
        _gfile().rmtree(path)


def publish_staged(staging_dir: str, dataset_dir: str, replace: bool = False) -> dict:
    """Moves every split written to `staging_dir` into `dataset_dir`, manifest last.

    Jobs that write several splits (`dsbs import`) write them all to a staging directory
    first, so that a bad record in the last split leaves `dataset_dir` exactly as it was.
    Splits already in `dataset_dir` and not in the staging manifest are kept, unless
    `replace`: then the staging directory becomes `dataset_dir` whole (the old one is renamed
    aside first and deleted last), so no split of the old dataset survives next to the new.

    Returns:
      The manifest now in `dataset_dir`.
    """
    gfile = _gfile()
    staged = read_manifest(staging_dir)
    if replace:
        return _replace_dir(staging_dir, dataset_dir, staged)
    gfile.makedirs(dataset_dir)
    manifest_path = _join(dataset_dir, MANIFEST)
    manifest = read_manifest(dataset_dir) if gfile.exists(manifest_path) else {}
    splits = manifest.setdefault("splits", {})
    for split, entry in staged.get("splits", {}).items():
        old_files = set(splits.get(split, {}).get("files", ()))
        for name in entry["files"]:
            gfile.rename(_join(staging_dir, name), _join(dataset_dir, name), overwrite=True)
        for stale in old_files - set(entry["files"]):
            if gfile.exists(_join(dataset_dir, stale)):
                gfile.remove(_join(dataset_dir, stale))
        splits[split] = entry
    manifest.update({k: v for k, v in staged.items() if k != "splits"})
    manifest["splits"] = dict(sorted(splits.items()))
    _write_manifest(manifest_path, manifest)
    remove_dir(staging_dir)
    return manifest
