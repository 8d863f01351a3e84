"""`dsbs import`: convert a dataset to `{out}/{dataset}/` TFRecords + manifest.

    dsbs import --format release --dataset cqa --src shared/data/dsbs_release --out data
    dsbs import --format tfds --dataset esnli --src ~/tensorflow_datasets --out data --splits valid test
    dsbs import --format jsonl --dataset myqa --src train.jsonl --out data \\
        --template "{question}\\nContext: {context}" --label_field answer --id_field qid
    dsbs import --format csv --dataset myqa --src data_dir/ --out data --splits train test \\
        --input_fields question --label_field answer --label_set yes,no

For jsonl/csv, `--src` is one file (one split, default "train") or a directory holding
`{split}.jsonl` / `{split}.csv`; the field mapping is saved as `{out}/{dataset}/dataset_spec.json`
so that `dsbs rationales --dataset NAME --src {out}/{dataset}` knows the dataset. All splits are
written to a staging directory first and moved into place together, so a bad record leaves
`--out` as it was. When train is imported and no validation split is, 10 % of train is held out as
`valid` (the reference's `train_test_split(test_size=0.1, seed=0)`); `--holdout 0` keeps it all. Splits of the same source are added to an existing `{out}/{dataset}`; one that
holds another source is replaced whole, and only with `--overwrite`.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from typing import Iterator, Optional, Sequence

from dsbs_jax import flags
from dsbs_jax.data import adapters, schema, tfrecords
from dsbs_jax.data.adapters.lines import DEFAULT_MAX_FIELD_BYTES
from dsbs_jax.data.splits import VALIDATION_SPLIT, holdout
from dsbs_jax.data.errors import DataError
from dsbs_jax.data.specs import get_spec

FORMATS = ("release", "tfds", "jsonl", "csv")
PROG = "dsbs import"


class ConfigError(ValueError):
    """A flag or output-directory problem (exit status 2), as opposed to bad data (status 1)."""


def _parser() -> argparse.ArgumentParser:
    p = flags.OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--dataset", required=True, help="dataset name: cqa, esnli, anli1, svamp, asdiv, or yours")
    p.add_argument("--src", required=True,
                   help="release root, TFDS data_dir, or a JSONL/CSV file or directory (gs:// works)")
    p.add_argument("--out", required=True, help="data root; writes {out}/{dataset}/ (gs:// works)")
    p.add_argument("--splits", nargs="+", help="default: the release's splits; 'train' for a single user file")
    p.add_argument("--num_shards", type=flags.int_at_least(1), default=1, help="shards per split")
    p.add_argument("--filter_labels", action="store_true",
                   help="drop teacher labels/rationales that fail to parse (the paper keeps them)")
    p.add_argument("--limit", type=flags.int_at_least(1),
                   help="only the first N examples of each split (release format)")
    p.add_argument("--max_field_bytes", type=flags.int_at_least(1), default=DEFAULT_MAX_FIELD_BYTES,
                   help="largest field of an input record, in bytes (default 1 MiB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing {out}/{dataset} whole")
    p.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    p.add_argument("--holdout", type=flags.float_in(0.0, 1.0), default=None,
                   help="share of train written as the 'valid' split when the data has none (default: 0.1 with "
                        "seed 0, as the paper's reference for cqa/svamp/asdiv; 0 keeps all of train)")
    p.add_argument("--tfds_name", help="TFDS name when not the default for --dataset (e.g. a dataset you built)")
    p.add_argument("--train_vocab", type=flags.int_at_least(16), metavar="N",
                   help="also train a SentencePiece model of up to N pieces on the train split, saved as "
                        "{out}/{dataset}/vocab/spm_{pieces}.model and used by `import tasks` (offline: no gs:// "
                        "vocabulary; train from scratch with it, since pretrained T5 needs T5's)")
    g = p.add_argument_group("user data (jsonl/csv)")
    g.add_argument("--template",
                   help="Python format template over record fields, e.g. '{question}\\nContext: {context}'")
    g.add_argument("--input_fields", help="comma-separated fields joined by newlines (instead of --template)")
    g.add_argument("--label_field")
    g.add_argument("--rationale_field")
    g.add_argument("--id_field")
    g.add_argument("--label_set", help="comma-separated allowed labels")
    return p


def _user_path(src: str, split: str, fmt: str) -> str:
    return adapters.base.join(src, f"{split}.{fmt}") if adapters.base.is_dir(src) else src


def _examples(args: argparse.Namespace, split: str,
              notes: Optional[adapters.user.ReadNotes] = None) -> Iterator[schema.Example]:
    if args.format == "release":
        return adapters.read_release(args.src, args.dataset, split, filter_labels=args.filter_labels,
                                     limit=args.limit, max_field_bytes=args.max_field_bytes)
    if args.format == "tfds":
        return adapters.read_tfds(args.dataset, split, data_dir=args.src, tfds_name=args.tfds_name)
    spec = None
    if not (args.template or args.input_fields):
        spec = get_spec(args.dataset)  # a known dataset's own record format, e.g. cqa as JSON lines
    return adapters.read_user(_user_path(args.src, split, args.format), args.dataset, split, _mapping(args),
                              fmt=args.format, spec=spec, max_field_bytes=args.max_field_bytes, notes=notes)


def _mapping(args: argparse.Namespace) -> adapters.FieldMapping:
    return adapters.FieldMapping(
        template=args.template.replace("\\n", "\n") if args.template else None,
        input_fields=tuple(f for f in (args.input_fields or "").split(",") if f),
        label_field=args.label_field, rationale_field=args.rationale_field, id_field=args.id_field,
        label_set=tuple(args.label_set.split(",")) if args.label_set else None)


def _default_splits(args: argparse.Namespace) -> list[str]:
    if args.format in ("jsonl", "csv"):
        if not adapters.base.is_dir(args.src):
            return ["train"]
        return [name.rsplit(".", 1)[0] for name in adapters.base.list_dir(args.src) if name.endswith("." + args.format)]
    try:
        return list(get_spec(args.dataset).release_splits)
    except KeyError:
        return ["train", "valid", "test"]


def _summary(dataset_dir: str, manifest: dict) -> str:
    def pct(value: Optional[float]) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    lines = [f"wrote {dataset_dir}", f"{'split':<8} {'examples':>9} {'parsed':>8} {'agree':>7}  "
             f"{'ref.parsed':>10} {'ref.agree':>9}  failures"]
    for split, entry in manifest["splits"].items():
        ref = entry.get("reference_rules", {})
        failures = ", ".join(f"{k}={v}" for k, v in entry["parse_failures"].items()) or "-"
        lines.append(f"{split:<8} {entry['num_examples']:>9} {pct(entry['parse_rate']):>8} "
                     f"{pct(entry['teacher_gold_agreement']):>7}  {pct(ref.get('parse_rate')):>10} "
                     f"{pct(ref.get('teacher_gold_agreement')):>9}  {failures}")
    return "\n".join(lines)


def _source(args: argparse.Namespace) -> dict:
    """The manifest's `source`: the basename for people, and an id of the absolute path (a release
    root and its dataset folder are the same source) that tells two imports apart."""
    import hashlib
    import os

    path = args.src.rstrip("/")
    if args.format == "release" and path.rsplit("/", 1)[-1] == args.dataset:
        path = path.rsplit("/", 1)[0] if "/" in path else "."
    canonical = path if "://" in path else os.path.abspath(path)
    return {"format": args.format, "path": args.src.rstrip("/").rsplit("/", 1)[-1],
            "id": hashlib.sha256(f"{args.format}:{canonical}".encode()).hexdigest()[:16]}


def _check_out(args: argparse.Namespace, dataset_dir: str, source: dict) -> bool:
    """Refuses, before anything is written, an --out that cannot be written or that holds this
    dataset from another source (an import into it used to merge splits of two sources under
    one manifest). Returns True to replace the dataset dir whole, False to add splits to it."""
    problem = flags.check_writable(args.out, "--out")
    if problem:
        raise ConfigError(problem)
    if not adapters.base.path_exists(dataset_dir):
        return True
    if not adapters.base.is_dir(dataset_dir):
        raise ConfigError(f"--out {args.out}: {dataset_dir} is a file; remove it or choose another --out")
    if args.overwrite or not adapters.base.list_dir(dataset_dir):
        return True
    try:
        manifest = tfrecords.read_manifest(dataset_dir)
    except (FileNotFoundError, ValueError):
        held = "files but no complete manifest"
    else:
        old = manifest.get("source") or {}
        if old.get("id") == source["id"]:
            return False  # more splits of the same source: added next to the others
        held = (f"an import of {manifest.get('dataset', args.dataset)!r} from {old.get('format')} "
                f"{old.get('path')!r}" if old else f"dataset {manifest.get('dataset', args.dataset)!r} "
                f"(splits {sorted(manifest.get('splits', {}))}, not from `dsbs import`)")
    raise ConfigError(f"--out {args.out}: {dataset_dir} already holds {held}; pass --overwrite to replace it "
                      "whole, or choose another --out")


def _check_sources(args: argparse.Namespace, splits: list[str]) -> None:
    """The dataset name and every split's file, checked before any is read (fails in a moment)."""
    spec = get_spec(args.dataset) if args.format in ("release", "tfds") else None
    if args.format == "release":
        for split in splits:
            # A combined dataset (svamp_asdiv) reads its sources' files; its reader names a bad split.
            for source in (spec.combines.get(split, ()) if spec.combines else (args.dataset,)):
                adapters.release.release_files(args.src, source, split)
    elif args.format in ("jsonl", "csv"):
        for split in splits:
            path = _user_path(args.src, split, args.format)
            if not adapters.base.path_exists(path):
                raise DataError(path, None, None, "file not found", fix="check --src and --splits")


# The reference's validation split for datasets without one (run.py: train_test_split(test_size=0.1, seed=0)).
DEFAULT_HOLDOUT = 0.1


def _holdout_share(args: argparse.Namespace, splits: Sequence[str]) -> float:
    """The share of train to hold out as validation: only when train is imported and 'valid' is not.

    The paper's datasets say their own (0 for those with a validation split); any other dataset,
    yours included, gets the reference's 10 %: evaluation during training needs a validation split.
    """
    if "train" not in splits or splits_has_validation(splits):
        return 0.0
    if args.holdout is not None:
        if not 0.0 <= args.holdout < 1.0:
            raise DataError(None, None, None, f"--holdout {args.holdout}: expected a share in [0, 1)")
        return args.holdout
    try:
        return get_spec(args.dataset).validation_holdout
    except KeyError:
        return DEFAULT_HOLDOUT


def splits_has_validation(splits: Sequence[str]) -> bool:
    return any(s in ("valid", "validation") for s in splits)


def _write_train_and_holdout(args: argparse.Namespace, staging: str, share: float, extra: dict,
                             notes: adapters.user.ReadNotes) -> None:
    """Train minus the reference's `train_test_split(test_size=share, seed=0)`, and that part as 'valid'."""
    from tqdm import tqdm

    examples = list(tqdm(_examples(args, "train", notes), desc=f"{args.dataset}/train", unit=" ex", file=sys.stderr,
                         mininterval=1.0))
    try:
        kept, held_out = holdout(examples, test_size=share, seed=0)
    except ValueError as error:  # too few rows to split
        raise DataError(_user_path(args.src, "train", args.format) if args.format in ("jsonl", "csv") else args.src,
                        None, None, str(error).rstrip("."), fix="--holdout 0 keeps every row in train") from None
    rule = {"held_out_from": "train", "test_size": share, "seed": 0,
            "rule": "datasets.Dataset.train_test_split (the reference's validation split)"}
    tfrecords.write_split(staging, "train", kept, num_shards=args.num_shards, manifest_extra=extra,
                          split_extra={"holdout": {**rule, "part": "train"}})
    tfrecords.write_split(staging, VALIDATION_SPLIT, [e.replace(split=VALIDATION_SPLIT) for e in held_out],
                          num_shards=args.num_shards, manifest_extra=extra,
                          split_extra={"holdout": {**rule, "part": "test"}})


def run(args: argparse.Namespace, notes: Optional[adapters.user.ReadNotes] = None) -> dict:
    """Imports every split; returns the dataset's manifest (and fills `notes`, for user data)."""
    from tqdm import tqdm

    notes = adapters.user.ReadNotes() if notes is None else notes
    dataset_dir = f"{args.out.rstrip('/')}/{args.dataset}"
    source = _source(args)
    replace = _check_out(args, dataset_dir, source)
    extra = {"source": source, "created_by": "dsbs import"}
    if args.format == "release":
        extra["teacher"] = dict(adapters.release.TEACHER)
    spec_record = None
    if args.format in ("jsonl", "csv") and (args.template or args.input_fields):
        spec_record = adapters.user.spec_record(args.dataset, _mapping(args))
        extra["metric"] = spec_record["metric"]
    splits = args.splits or _default_splits(args)
    if not splits:
        raise DataError(args.src, None, None, f"no {{split}}.{args.format} files in this directory",
                        fix="name the files train.jsonl, test.jsonl, ... or pass --splits")
    _check_sources(args, splits)
    staging = f"{args.out.rstrip('/')}/.{args.dataset}.staging-{uuid.uuid4().hex[:8]}"
    holdout = _holdout_share(args, splits)
    try:
        for split in splits:
            if split == "train" and holdout:
                _write_train_and_holdout(args, staging, holdout, extra, notes)
                continue
            with tqdm(_examples(args, split, notes), desc=f"{args.dataset}/{split}", unit=" ex", file=sys.stderr,
                      mininterval=1.0) as examples:
                tfrecords.write_split(staging, split, examples, num_shards=args.num_shards, manifest_extra=extra)
        if spec_record is not None:
            adapters.user.write_spec_file(staging if replace else dataset_dir, spec_record)
        if not args.train_vocab:
            manifest = tfrecords.publish_staged(staging, dataset_dir, replace=replace)
            if "train" in splits and "vocabulary" in manifest:  # trained on the train split just replaced
                from dsbs_jax.data import vocab

                notes.dropped_vocabulary = vocab.remove_dataset_vocabulary(dataset_dir)
                return tfrecords.read_manifest(dataset_dir)
            return manifest
        # Trained before publishing, so a failure leaves --out as it was.
        import tempfile

        from dsbs_jax.data import vocab

        vocab_splits = ["train"] if "train" in splits else splits[:1]
        with tempfile.TemporaryDirectory() as tmp:
            model = vocab.train_dataset_vocabulary(staging, args.train_vocab, tmp, vocab_splits)
            tfrecords.publish_staged(staging, dataset_dir, replace=replace)
            vocab.install_dataset_vocabulary(dataset_dir, model, args.train_vocab, vocab_splits)
        return tfrecords.read_manifest(dataset_dir)
    finally:
        tfrecords.remove_dir(staging)


def _notes(args: argparse.Namespace, manifest: dict, notes: adapters.user.ReadNotes) -> list[str]:
    """What the import decided for the user: the held-out split, the vocabulary, converted labels."""
    dataset_dir = f"{args.out.rstrip('/')}/{args.dataset}"
    lines = []
    held = manifest["splits"].get(VALIDATION_SPLIT, {}).get("holdout")
    if held and "train" in manifest["splits"]:
        total = manifest["splits"]["train"]["num_examples"] + manifest["splits"][VALIDATION_SPLIT]["num_examples"]
        lines.append(f"held out {manifest['splits'][VALIDATION_SPLIT]['num_examples']} of {total} train examples as "
                     f"'{VALIDATION_SPLIT}' ({held['test_size']:.0%}, seed {held['seed']}, as the paper's reference "
                     "does for data without a validation split; --holdout 0 keeps them in train)")
    vocabulary = manifest.get("vocabulary")
    if args.train_vocab and vocabulary:
        size = vocabulary["vocab_size"]
        short = (f" (--train_vocab {args.train_vocab} asked for more than the train split's text yields)"
                 if size < args.train_vocab else f" (more than --train_vocab {args.train_vocab}: 256 of them are the "
                 "bytes that spell text it never saw)" if size > args.train_vocab else "")
        lines.append(f"vocabulary: {dataset_dir}/{vocabulary['path']}, {size} pieces{short}; the tasks of "
                     f"{args.dataset!r} use it: train from scratch with it (pretrained T5 needs T5's vocabulary)")
    if notes.dropped_vocabulary:
        lines.append(f"vocabulary: dropped {dataset_dir}/{notes.dropped_vocabulary['path']}, trained on the train "
                     "split this import replaced; the tasks now use T5's (--train_vocab N trains a new one)")
    if notes.numeric_labels:
        lines.append(f"note: {notes.numeric_labels} labels of field {args.label_field!r} are JSON numbers (e.g. "
                     f"{notes.first_numeric_label!r}); they are stored, learned and predicted as text "
                     f"({str(notes.first_numeric_label)!r}) and scored by exact match")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    notes = adapters.user.ReadNotes()
    try:
        manifest = run(args, notes)
    except DataError as error:  # bad input data
        return flags.report_error(PROG, error, verbose=args.verbose, code=1)
    except (ConfigError, KeyError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
        return flags.report_error(PROG, error, verbose=args.verbose, code=flags.USAGE_EXIT)
    except Exception as error:  # anything else: still one line; the traceback under --verbose
        return flags.report_error(PROG, error, verbose=args.verbose, code=1)
    print(_summary(f"{args.out.rstrip('/')}/{args.dataset}", manifest))
    for line in _notes(args, manifest, notes):
        print(line)
    return 0
