"""`dsbs predict`: labels (and the student's own rationales) for a JSONL file from a checkpoint.

    dsbs predict --checkpoint /tmp/cqa_run --input questions.jsonl --output preds.jsonl --rationale

Each output line is the input record plus `prediction` (the decoded label) and, with
`--rationale`, `rationale` (the student's own rationale), in input order. How the input is
formatted and the output read is the run's method (`dsbs_jax/methods.py`, recorded in
`dsbs_run.json`): `predict: ` x for Distilling step-by-step students (their rationale from
`explain: ` x), x alone for standard finetuning and the single-task ablation (whose output
"rationale So the answer is label" holds both). The checkpoint is a `dsbs train` MODEL_DIR or a
T5X/HF checkpoint together with `--vocabulary` and `--method`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from dsbs_jax import methods


class PredictError(ValueError):
    """Bad input file or arguments; the message names the file/line and the fix."""


def read_jsonl(path: str, input_field: str) -> List[Dict[str, Any]]:
    """Records of `path`, each checked to have a string `input_field`."""
    if os.path.isdir(path):
        raise PredictError(f"--input {path}: is a directory; pass a JSONL file (one object per line).")
    if not os.path.isfile(path):
        raise PredictError(f"--input {path}: no such file.")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise PredictError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}).") from None
            if not isinstance(record, dict) or not isinstance(record.get(input_field), str):
                found = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise PredictError(f"{path}:{n}: expected an object with a string field {input_field!r}, found "
                                   f"{found}; pick the field with --input_field.")
            records.append(record)
    if not records:
        raise PredictError(f"--input {path} has no records.")
    return records


def _encode_ids(vocab: Any, text: str, max_len: int) -> List[int]:
    """Ids + EOS (1), truncated like SeqIO's append_eos_after_trim.

    `</s>` in a text becomes the EOS id, as in the SeqIO tasks (`data.vocab.encode_text`).
    """
    from dsbs_jax.data.vocab import encode_text

    return encode_text(vocab, text)[: max_len - 1] + [1]


def _decode_row(vocab: Any, row: List[int]) -> str:
    row = row[: row.index(1)] if 1 in row else row
    return vocab.decode([t for t in row if t > 0])


def generate_texts(params: Any, model_config: Any, vocab: Any, texts: Sequence[str], *, batch_size: int,
                   max_input_length: int, max_decode_length: int, desc: str = "decode") -> List[str]:
    """Greedy-decodes each text; returns decoded strings in input order.

    The same outputs as decoding each input padded to `max_input_length` in file order (padding is
    masked out of attention; tests/test_predict.py checks it), with less work: inputs are sorted by
    length (longest first, so the largest shape compiles and runs first) and each batch is padded to
    its `decoding.bucket_length`; every batch has `batch_size` rows (the last one filled with empty inputs),
    so a partial batch needs no compile of its own. Batch k+1 is dispatched as soon as batch k is
    decoded and before its tokens are fetched and detokenized (JAX's async dispatch), so host work
    overlaps the decoding.
    """
    import jax
    from tqdm import tqdm

    from dsbs_jax.models import decoding

    ids = [_encode_ids(vocab, text, max_input_length) for text in texts]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # stable: ties keep input order
    rows_per_batch = min(batch_size, len(ids))
    out: List[Optional[str]] = [None] * len(ids)

    def collect(indices: List[int], tokens: Any) -> None:
        for i, row in zip(indices, np.asarray(tokens)[: len(indices)].tolist()):
            out[i] = _decode_row(vocab, row)

    pending = None
    for start in tqdm(range(0, len(order), rows_per_batch), desc=desc, unit="batch"):
        indices = order[start:start + rows_per_batch]
        inputs = np.zeros((rows_per_batch, decoding.bucket_length(len(ids[indices[0]]), max_input_length)), np.int32)
        inputs[:, 0] = 1  # filler rows of a partial batch: the empty input (EOS only)
        for r, i in enumerate(indices):
            inputs[r, : len(ids[i])] = ids[i]
        if pending is not None:
            # One decode at a time: two in flight compete for the cores (3 batches of 32 at the anchor
            # dims: 34.8 s vs 30.2 s); batch k's detokenizing still overlaps batch k+1's decode.
            jax.block_until_ready(pending[1])
        tokens = decoding.generate(params, model_config, inputs, method="greedy",
                                   max_decode_length=max_decode_length)
        if pending is not None:
            collect(*pending)
        pending = (indices, tokens)
    if pending is not None:
        collect(*pending)
    return out


def _vocabulary(record: Dict[str, Any], override: Optional[str]) -> Any:
    import seqio

    spec = record.get("vocabulary") or {}
    path = override or spec.get("sentencepiece_model_file")
    if not path:
        raise PredictError("No vocabulary: the checkpoint has no dsbs_run.json naming one; pass --vocabulary "
                           "path/to/sentencepiece.model.")
    return seqio.SentencePieceVocabulary(path, extra_ids=int(spec.get("extra_ids") or 0))


def predict(checkpoint: str, records: Sequence[Dict[str, Any]], *, input_field: str = "input",
            rationale: bool = False, batch_size: int = 32, max_decode_length: Optional[int] = None,
            max_input_length: Optional[int] = None, step: Optional[int] = None,
            vocabulary: Optional[str] = None, method: Optional[str] = None) -> List[Dict[str, Any]]:
    """`records` with `prediction` (and `rationale`) added, formatted and read by the run's method.

    `method` is needed only for checkpoints without a `dsbs_run.json` (T5X/HF ones); for our runs
    it must agree with the recorded one.
    """
    from dsbs_jax.train import inference

    params, model_config, record = inference.load_for_inference(checkpoint, step=step)
    chosen = _method_of(checkpoint, record, method)
    if rationale and not chosen.needs_rationales:
        raise PredictError(f"{checkpoint} is a {chosen.name!r} student ({chosen.summary}), which learns no "
                           "rationale; drop --rationale.")
    vocab = _vocabulary(record, vocabulary)
    lengths = record.get("task_feature_lengths") or {}
    max_in = max_input_length or int(lengths.get("inputs", 512))
    max_dec = max_decode_length or int(record.get("max_decode_length") or chosen.decode_length(lengths))
    texts = [r[input_field] for r in records]
    outputs = generate_texts(params, model_config, vocab, [chosen.input_prefix + t for t in texts],
                             batch_size=batch_size, max_input_length=max_in, max_decode_length=max_dec,
                             desc="labels")
    if chosen.postprocessor == "single":
        split = [text.rpartition(methods.SINGLE_SEPARATOR.strip()) for text in outputs]
        return [{**r, "prediction": (label if sep else head).strip(),
                 **({"rationale": head.strip() if sep else ""} if rationale else {})}
                for r, (head, sep, label) in zip(records, split)]
    out = [{**r, "prediction": p.strip()} for r, p in zip(records, outputs)]
    if rationale:
        rationales = generate_texts(params, model_config, vocab, [methods.EXPLAIN_PREFIX + t for t in texts],
                                    batch_size=batch_size, max_input_length=max_in,
                                    max_decode_length=int(lengths.get("targets", max_dec)), desc="rationales")
        out = [{**r, "rationale": x.strip()} for r, x in zip(out, rationales)]
    return out


def _method_of(checkpoint: str, record: Dict[str, Any], requested: Optional[str]) -> methods.Method:
    recorded = record.get("method")
    try:
        if recorded and requested and recorded != requested:
            raise PredictError(f"{checkpoint} was trained with method {recorded!r}, not --method {requested}; "
                               "drop --method.")
        if recorded or requested:
            return methods.get(recorded or requested)
    except ValueError as e:
        raise PredictError(f"--method: {e}") from None
    raise PredictError(f"{checkpoint} has no dsbs_run.json naming its method; pass --method "
                       f"({', '.join(methods.METHODS)}).")


def write_jsonl(path: str, records: Iterable[Dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _check_writable(path: str) -> None:
    """Fails before decoding, not after, when `--output` cannot be written."""
    from dsbs_jax import flags

    if os.path.isdir(path):
        raise PredictError(f"--output {path}: is a directory; name a .jsonl file.")
    problem = flags.check_writable(os.path.dirname(os.path.abspath(path)), "--output")
    if problem:
        raise PredictError(problem)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dsbs_jax import flags

    parser = flags.OneLineParser(prog="dsbs predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="`dsbs train` MODEL_DIR or T5X/HF checkpoint")
    parser.add_argument("--input", required=True, help="JSONL file, one object per line")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--rationale", action="store_true", help="also generate the student's rationale")
    parser.add_argument("--input_field", default="input", help="field holding the formatted input x")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_decode_length", type=int, default=None, help="default: the run's (64)")
    parser.add_argument("--max_input_length", type=int, default=None, help="default: the run's inputs length")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument("--vocabulary", default=None, help="SentencePiece model (default: the run's)")
    parser.add_argument("--method", default=None, choices=list(methods.METHODS),
                        help="the method a T5X/HF checkpoint was trained with (default: the run's recorded one)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from dsbs_jax.train.checkpointing import CheckpointError

    try:
        _check_writable(args.output)
        records = read_jsonl(args.input, args.input_field)
        out = predict(args.checkpoint, records, input_field=args.input_field, rationale=args.rationale,
                      batch_size=args.batch_size, max_decode_length=args.max_decode_length,
                      max_input_length=args.max_input_length, step=args.step, vocabulary=args.vocabulary,
                      method=args.method)
    except (PredictError, CheckpointError) as e:
        print(f"dsbs predict: error: {e}", file=sys.stderr)
        return 2
    write_jsonl(args.output, out)
    print(f"dsbs predict: wrote {len(out)} records to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
