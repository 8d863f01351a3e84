"""`dsbs import`: convert a dataset to `{out}/{dataset}/` TFRecords + manifest.

    dsbs import --format release --dataset cqa --src shared/data/dsbs_release --out data
    dsbs import --format tfds --dataset esnli --src ~/tensorflow_datasets --out data --splits valid test
    dsbs import --format jsonl --dataset myqa --src train.jsonl --out data \\
        --template "{question}\\nContext: {context}" --label_field answer --id_field qid
    dsbs import --format csv --dataset myqa --src data_dir/ --out data --splits train test \\
        --input_fields question --label_field answer --label_set yes,no

For jsonl/csv, `--src` is one file (one split, default "train") or a directory holding
`{split}.jsonl` / `{split}.csv`. All splits are written to a staging directory first and moved
into place together, so a bad record leaves `--out` as it was.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from typing import Iterator, Optional, Sequence

from dsbs_jax.data import adapters, schema, tfrecords
from dsbs_jax.data.errors import DataError
from dsbs_jax.data.specs import get_spec

FORMATS = ("release", "tfds", "jsonl", "csv")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsbs import", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--dataset", required=True, help="dataset name: cqa, esnli, anli1, svamp, asdiv, or yours")
    p.add_argument("--src", required=True,
                   help="release root, TFDS data_dir, or a JSONL/CSV file or directory (gs:// works)")
    p.add_argument("--out", required=True, help="data root; writes {out}/{dataset}/ (gs:// works)")
    p.add_argument("--splits", nargs="+", help="default: the release's splits; 'train' for a single user file")
    p.add_argument("--num_shards", type=_positive_int, default=1, help="shards per split")
    p.add_argument("--filter_labels", action="store_true",
                   help="drop teacher labels/rationales that fail to parse (the paper keeps them)")
    p.add_argument("--limit", type=int, help="only the first N examples of each split (release format)")
    p.add_argument("--tfds_name", help="TFDS name when not the default for --dataset (e.g. a dataset you built)")
    p.add_argument("--train_vocab", type=_positive_int, metavar="N",
                   help="also train an N-piece SentencePiece model on the train split, saved as "
                        "{out}/{dataset}/vocab/spm_N.model and used by `import tasks` (offline: no gs:// vocabulary)")
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


def _examples(args: argparse.Namespace, split: str) -> Iterator[schema.Example]:
    if args.format == "release":
        return adapters.read_release(args.src, args.dataset, split, filter_labels=args.filter_labels,
                                     limit=args.limit)
    if args.format == "tfds":
        return adapters.read_tfds(args.dataset, split, data_dir=args.src, tfds_name=args.tfds_name)
    spec = None
    if not (args.template or args.input_fields):
        spec = get_spec(args.dataset)  # a known dataset's own record format, e.g. cqa as JSON lines
    mapping = adapters.FieldMapping(
        template=args.template.replace("\\n", "\n") if args.template else None,
        input_fields=tuple(f for f in (args.input_fields or "").split(",") if f),
        label_field=args.label_field, rationale_field=args.rationale_field, id_field=args.id_field,
        label_set=tuple(args.label_set.split(",")) if args.label_set else None)
    return adapters.read_user(_user_path(args.src, split, args.format), args.dataset, split, mapping,
                              fmt=args.format, spec=spec)


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


def run(args: argparse.Namespace) -> dict:
    """Imports every split; returns the dataset's manifest."""
    from tqdm import tqdm

    dataset_dir = f"{args.out.rstrip('/')}/{args.dataset}"
    staging = f"{args.out.rstrip('/')}/.{args.dataset}.staging-{uuid.uuid4().hex[:8]}"
    extra = {"source": {"format": args.format, "path": args.src.rstrip("/").rsplit("/", 1)[-1]}}
    if args.format == "release":
        extra["teacher"] = dict(adapters.release.TEACHER)
    splits = args.splits or _default_splits(args)
    if not splits:
        raise DataError(args.src, None, None, f"no {{split}}.{args.format} files in this directory",
                        fix="name the files train.jsonl, test.jsonl, ... or pass --splits")
    try:
        for split in splits:
            with tqdm(_examples(args, split), desc=f"{args.dataset}/{split}", unit=" ex", file=sys.stderr,
                      mininterval=1.0) as examples:
                tfrecords.write_split(staging, split, examples, num_shards=args.num_shards, manifest_extra=extra)
        if not args.train_vocab:
            return tfrecords.publish_staged(staging, dataset_dir)
        # Trained before publishing, so a failure leaves --out as it was.
        import tempfile

        from dsbs_jax.data import vocab

        vocab_splits = ["train"] if "train" in splits else splits[:1]
        with tempfile.TemporaryDirectory() as tmp:
            model = vocab.train_dataset_vocabulary(staging, args.train_vocab, tmp, vocab_splits)
            tfrecords.publish_staged(staging, dataset_dir)
            vocab.install_dataset_vocabulary(dataset_dir, model, args.train_vocab, vocab_splits)
        return tfrecords.read_manifest(dataset_dir)
    finally:
        tfrecords.remove_dir(staging)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        manifest = run(args)
    except (DataError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"dsbs import: error: {message}", file=sys.stderr)
        return 1
    print(_summary(f"{args.out.rstrip('/')}/{args.dataset}", manifest))
    return 0
