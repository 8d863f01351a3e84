"""`dsbs rationales`: run a teacher over a split (one shard), or `dsbs rationales merge`."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from dsbs_jax import flags
from dsbs_jax.rationales.job import JobConfig, merge, run_job

PROG = "dsbs rationales"
_int = flags.int_at_least


def _job_parser() -> argparse.ArgumentParser:
    p = flags.OneLineParser(prog=PROG, description=__doc__,
                            epilog="`dsbs rationales merge --out DIR --dataset D --split S --num_shards N` "
                                   "checks and records the shards of a multi-host run.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True, help="data root; writes {out}/{dataset}/ (gs:// works)")
    p.add_argument("--src", help="release root, a dataset dir from `dsbs import`, ...")
    p.add_argument("--src_format", default="auto", choices=["auto", "release", "tfrecords"])
    p.add_argument("--teacher", default="openai", choices=["openai", "jax", "annotations"])
    p.add_argument("--base_url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model")
    p.add_argument("--api_style", default="completions", choices=["completions", "chat"])
    p.add_argument("--api_key_env", default="OPENAI_API_KEY", help="name of the env var holding the API key")
    p.add_argument("--temperature", type=flags.float_in(0.0), default=0.0)
    p.add_argument("--max_tokens", type=_int(1), default=256)
    p.add_argument("--prompt_file")
    p.add_argument("--num_samples", type=_int(1), default=1, help="k samples for self-consistency")
    p.add_argument("--filter_disagreeing", action="store_true", help="drop examples whose teacher label != gold")
    p.add_argument("--filter_labels", action="store_true", help="drop labels outside the label set")
    p.add_argument("--num_shards", type=_int(1), default=1)
    p.add_argument("--shard_index", type=_int(0), default=0)
    p.add_argument("--concurrency", type=_int(1), default=8)
    p.add_argument("--rpm", type=flags.float_in(0.0, low_open=True), help="client-side requests/min limit")
    p.add_argument("--tpm", type=flags.float_in(0.0, low_open=True), help="client-side tokens/min limit")
    p.add_argument("--max_retries", type=_int(0), default=6)
    p.add_argument("--timeout", type=flags.float_in(0.0, low_open=True), default=120.0, help="per-request timeout (s)")
    p.add_argument("--limit", type=_int(1))
    p.add_argument("--jax_checkpoint", help="T5X/HF checkpoint for --teacher jax")
    p.add_argument("--spm_path", help="SentencePiece model for --teacher jax")
    p.add_argument("--batch_size", type=_int(1), default=8)
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--min_parse_rate", type=flags.float_in(0.0, 1.0), default=0.5,
                   help="exit non-zero (publishing nothing) when fewer outputs parse; 0 accepts any")
    p.add_argument("--min_rationale_chars", type=_int(0), default=5,
                   help="drop rationales shorter than this (junk such as 'A:.'); counted in the manifest")
    p.add_argument("--runner", help="run as an Apache Beam pipeline on this runner (DirectRunner, DataflowRunner, "
                                    "FlinkRunner, SparkRunner); flags this parser does not know go to Beam "
                                    "(docs/rationales.md). Default: one process")
    p.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    return p


def _exit_code(error: BaseException) -> int:
    """1 for a run that failed (teacher, lock, quality gate), 2 for arguments and paths."""
    from dsbs_jax.rationales.backends import TeacherError
    from dsbs_jax.rationales.job import BelowMinParseRate
    from dsbs_jax.rationales.store import JobLockedError

    if isinstance(error, (TeacherError, BelowMinParseRate, JobLockedError)):
        return 1
    return flags.USAGE_EXIT if isinstance(error, (ValueError, KeyError, OSError)) else 1


def _merge_parser() -> argparse.ArgumentParser:
    p = flags.OneLineParser(prog=f"{PROG} merge")
    for flag in ("--out", "--dataset", "--split"):
        p.add_argument(flag, required=True)
    p.add_argument("--num_shards", type=_int(1), required=True)
    p.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    from dsbs_jax.rationales.backends import redact_text, url_secrets

    secrets = url_secrets(argv[argv.index("--base_url") + 1]) if "--base_url" in argv[:-1] else []
    try:
        return _main(argv)
    except Exception as error:  # one line naming the flag/file/URL; the traceback only under --verbose
        return flags.report_error(PROG, error, verbose=verbose, code=_exit_code(error),
                                  redact=lambda text: redact_text(text, secrets))


def _main(argv: list[str]) -> int:
    if argv[:1] == ["merge"]:
        a = _merge_parser().parse_args(argv[1:])
        manifest = merge(a.out, a.dataset, a.split, a.num_shards)
        print(json.dumps(manifest["splits"][a.split], indent=1, sort_keys=True))
        return 0
    parser = _job_parser()
    a, beam_args = parser.parse_known_args(argv)
    if beam_args and not a.runner:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam pipeline options need --runner)")
    config = JobConfig(
        dataset=a.dataset, split=a.split, out=a.out, src=a.src, src_format=a.src_format, teacher=a.teacher,
        base_url=a.base_url, model=a.model, api_style=a.api_style, api_key_env=a.api_key_env,
        temperature=a.temperature, max_tokens=a.max_tokens, prompt_file=a.prompt_file, num_samples=a.num_samples,
        filter_disagreeing=a.filter_disagreeing, filter_labels=a.filter_labels, num_shards=a.num_shards,
        shard_index=a.shard_index, concurrency=a.concurrency, requests_per_minute=a.rpm, tokens_per_minute=a.tpm,
        max_retries=a.max_retries, timeout_s=a.timeout, limit=a.limit, jax_checkpoint=a.jax_checkpoint,
        spm_path=a.spm_path, batch_size=a.batch_size, progress=not a.no_progress,
        min_parse_rate=a.min_parse_rate, min_rationale_chars=a.min_rationale_chars)
    if a.runner:
        from dsbs_jax.rationales.beam_pipeline import cli_run

        return cli_run(config, a.runner, beam_args)
    result = run_job(config)
    split = result.get("splits", {}).get(a.split, result)
    summary = {k: split.get(k) for k in ("num_examples", "parse_rate", "teacher_gold_agreement", "parse_failures",
                                          "retries", "input_tokens", "output_tokens", "wall_time_s", "outputs_per_s")}
    print(json.dumps(summary, sort_keys=True))
    return 0
