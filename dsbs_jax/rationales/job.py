"""The rationale job: inputs -> few-shot CoT prompt -> teacher -> parsed (rationale, label) -> TFRecords.

    dsbs rationales --dataset cqa --split train --src RELEASE_DIR --teacher openai \
        --base_url http://127.0.0.1:8000 --model smollm2 --out DATA_ROOT [--num_shards 4 --shard_index 0]

Exactly once and resumable: every finished id is committed to an append-only log under
`{out}/{dataset}/_work/` before anything else happens, a restart with the same arguments skips
committed ids, and the shard's TFRecord file is written (temp file + rename) only when every id
of the shard is done. Shard `i` of `N` owns the ids whose stable hash is `i` mod `N`; `merge`
checks the shards cover every input id exactly once and writes the split's manifest entry.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Iterable, Mapping, Optional

import gin

from dsbs_jax import flags
from dsbs_jax.data import fs, schema, specs, tfrecords
from dsbs_jax.data.adapters import attach_teacher_output
from dsbs_jax.rationales import backends, prompts
from dsbs_jax.rationales.backends import redact_url
from dsbs_jax.rationales.ratelimit import RateLimiter
from dsbs_jax.rationales.store import JobLock, ProgressLog

WORK_DIR = "_work"
SEGMENTS = "segments.jsonl"  # one line per finished run of the shard (its wall time and requests)
REPORT = "report.json"  # the stats of a shard refused by --min_parse_rate


class OutputOwnedError(ValueError):
    """--out holds a split (or a dataset) that another command or job wrote."""


class BelowMinParseRate(RuntimeError):
    """The teacher's outputs parse too rarely to be worth training on (--min_parse_rate)."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class JobConfig:
    """One rationale job (one split, one shard). Never holds secrets: the key stays in the env."""

    dataset: str
    split: str
    out: str
    src: Optional[str] = None
    src_format: str = "auto"  # auto | release | tfrecords | jsonl | csv
    teacher: str = "openai"  # openai | jax | annotations
    base_url: Optional[str] = None
    model: Optional[str] = None
    api_style: str = "completions"
    api_key_env: Optional[str] = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 256
    prompt_file: Optional[str] = None
    num_samples: int = 1
    filter_disagreeing: bool = False
    filter_labels: bool = False
    num_shards: int = 1
    shard_index: int = 0
    concurrency: int = 8
    requests_per_minute: Optional[float] = None
    tokens_per_minute: Optional[float] = None
    max_retries: int = 6
    timeout_s: float = 120.0
    initial_backoff_s: float = 1.0
    limit: Optional[int] = None
    jax_checkpoint: Optional[str] = None
    spm_path: Optional[str] = None
    batch_size: int = 8
    progress: bool = True
    # Quality gates. The CLI's defaults are 0.5 and 5; the library's are off, so that callers
    # such as `dsbs demo` keep what they had.
    min_parse_rate: float = 0.0
    min_rationale_chars: int = 0

    def __post_init__(self):
        checks = [("--num_shards", self.num_shards, 1), ("--num_samples", self.num_samples, 1),
                  ("--concurrency", self.concurrency, 1), ("--max_tokens", self.max_tokens, 1),
                  ("--max_retries", self.max_retries, 0), ("--batch_size", self.batch_size, 1),
                  ("--shard_index", self.shard_index, 0), ("--min_rationale_chars", self.min_rationale_chars, 0)]
        if self.limit is not None:
            checks.append(("--limit", self.limit, 1))
        for flag, value, minimum in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{flag} must be an integer >= {minimum}, found {value!r}.")
        for flag, value in (("--timeout", self.timeout_s), ("--rpm", self.requests_per_minute),
                            ("--tpm", self.tokens_per_minute)):
            if value is not None and not value > 0:
                raise ValueError(f"{flag} must be a number > 0, found {value!r}.")
        if not self.temperature >= 0:
            raise ValueError(f"--temperature must be >= 0, found {self.temperature!r}.")
        if not 0 <= self.min_parse_rate <= 1:
            raise ValueError(f"--min_parse_rate must be in [0, 1], found {self.min_parse_rate!r}.")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard_index must be in [0, {self.num_shards}), found {self.shard_index}.")
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be >= 1, found {self.num_samples}.")
        if self.teacher == "openai" and not (self.base_url and self.model):
            raise ValueError("--teacher openai needs --base_url and --model.")
        if self.teacher == "jax" and not (self.jax_checkpoint and self.spm_path):
            raise ValueError("--teacher jax needs --jax_checkpoint and --spm_path.")
        if self.teacher not in ("openai", "jax", "annotations"):
            raise ValueError(f"--teacher must be openai, jax or annotations, found {self.teacher!r}.")

    def fingerprint(self) -> dict:
        """What must not change between a run and its resumption."""
        keep = ("dataset", "split", "src", "src_format", "teacher", "base_url", "model", "api_style", "temperature",
                "max_tokens", "prompt_file", "num_samples", "num_shards", "shard_index", "limit", "jax_checkpoint",
                "spm_path")
        values = {k: getattr(self, k) for k in keep}
        values["base_url"] = redact_url(self.base_url) if self.base_url else None  # never credentials
        return values


def shard_of(example_id: str, num_shards: int) -> int:
    """Deterministic shard of an id (the same on every host and Python version)."""
    return int.from_bytes(hashlib.sha256(example_id.encode("utf-8")).digest()[:8], "big") % num_shards


def read_inputs(config: JobConfig, spec: specs.DatasetSpec) -> list[schema.Example]:
    """The split's examples from a release dir, a TFRecord dataset dir, or a JSONL/CSV file."""
    from dsbs_jax.data import adapters

    src = config.src
    if src is None:
        raise ValueError("--src is required: a release root, a dataset dir from `dsbs import`, or a JSONL/CSV file.")
    if not adapters.base.path_exists(src):
        raise FileNotFoundError(f"--src {src} does not exist; pass a release root, a dataset dir written by "
                                "`dsbs import`, or check the path.")
    fmt = config.src_format
    if fmt == "auto":
        if adapters.base.path_exists(adapters.base.join(src, tfrecords.MANIFEST)):
            fmt = "tfrecords"
        elif src.lower().endswith((".jsonl", ".json", ".csv")):
            fmt = "csv" if src.lower().endswith(".csv") else "jsonl"
        else:
            fmt = "release"
    if fmt == "tfrecords":
        examples = list(tfrecords.read_split(src, config.split))
    elif fmt == "release":
        # The release's own PaLM outputs are dropped: the teacher writes new ones.
        examples = [e.replace(teacher_label=None, rationales=(), teacher_meta={})
                    for e in adapters.read_release(src, config.dataset, config.split, spec=spec, limit=config.limit)]
    else:
        raise ValueError(f"For user {fmt.upper()} files run `dsbs import --format {fmt}` first and pass its output "
                         f"dataset dir as --src (it maps your fields onto the canonical schema).")
    return examples[:config.limit] if config.limit is not None else examples


def make_teacher(config: JobConfig, spec: specs.DatasetSpec):
    if config.teacher == "annotations":
        return backends.AnnotationsTeacher(spec)
    if config.teacher == "jax":
        return backends.JaxTeacher.from_checkpoint(config.jax_checkpoint, config.spm_path, batch_size=config.batch_size,
                                                   max_decode_len=config.max_tokens, temperature=config.temperature,
                                                   method="greedy" if config.temperature == 0 else "sample")
    return backends.OpenAITeacher(
        config.base_url, config.model, api_style=config.api_style, temperature=config.temperature,
        max_tokens=config.max_tokens, stop=spec.stop_sequences, api_key_env=config.api_key_env,
        retry=backends.RetryPolicy(config.max_retries, config.initial_backoff_s, timeout_s=config.timeout_s),
        limiter=RateLimiter(config.requests_per_minute, config.tokens_per_minute), concurrency=config.concurrency)


def _shard_tag(config: JobConfig) -> str:
    return f"{config.split}.shard-{config.shard_index:05d}-of-{config.num_shards:05d}"


def _work_dir(config: JobConfig) -> str:
    return os.path.join(config.out, config.dataset, WORK_DIR, _shard_tag(config))


def _job_id(fingerprint: Mapping[str, Any]) -> str:
    """Names the job across its shards: what the manifest's `created_by` records."""
    shared = {k: v for k, v in fingerprint.items() if k != "shard_index"}
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _check_owner(config: JobConfig, job_id: str, resuming: bool) -> None:
    """Refuses (before anything is written) to replace a split this job did not create.

    Pointed at an import root, the job used to replace an imported split (1,221 CQA test
    examples became 5) and relabel the manifest's teacher.
    """
    dataset_dir = os.path.join(config.out, config.dataset)
    if not fs.exists(os.path.join(dataset_dir, tfrecords.MANIFEST)):
        return
    manifest = tfrecords.read_manifest(dataset_dir)
    if manifest.get("created_by") == "dsbs import" or "source" in manifest:
        source = manifest.get("source") or {}
        raise OutputOwnedError(
            f"--out {config.out}: {dataset_dir} holds `dsbs import` output ({source.get('format')} "
            f"{source.get('path')!r}, splits {sorted(manifest.get('splits', {}))}); the rationale job would "
            f"replace it and relabel its teacher. Write the teacher's output to another data root, e.g. "
            f"--out {config.out.rstrip('/')}_teacher (--src can stay).")
    entry = manifest.get("splits", {}).get(config.split)
    if entry is None:
        return
    owner = entry.get("created_by") or {}
    if owner.get("job") == job_id or (not owner and "num_shards_merged" in entry and resuming):
        return
    made_by = f"rationale job {owner['job']} (other arguments)" if owner.get("job") else "another command"
    raise OutputOwnedError(
        f"--out {config.out}: split {config.split!r} of {dataset_dir} was written by {made_by}, not by this job; "
        "refusing to replace it. Use another --out, or re-run with the arguments that wrote it.")


def _check_fingerprint(work_dir: str, fingerprint: Mapping[str, Any], write: bool = True) -> bool:
    """Refuses a work dir holding progress of other arguments; True when resuming one."""
    path = os.path.join(work_dir, "job.json")
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get("base_url"):  # written before URLs were redacted in job.json
            previous["base_url"] = redact_url(previous["base_url"])
        changed = {k: (previous.get(k), v) for k, v in fingerprint.items() if previous.get(k) != v}
        if changed:
            raise ValueError(f"{work_dir} holds progress of a job with other arguments {changed} (before, now). "
                             "Re-run with the same arguments to resume, or use another --out.")
        return True
    if not write:
        return False
    os.makedirs(work_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(dict(fingerprint), f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
    return False


async def _generate_all(config, teacher, template, todo: list[schema.Example], log: ProgressLog, counters,
                        segment: int, started: float) -> None:
    from tqdm.auto import tqdm

    semaphore = asyncio.Semaphore(max(config.concurrency, config.batch_size if config.teacher == "jax" else 1))
    bar = tqdm(total=len(todo), desc=f"{config.dataset}/{config.split} rationales", unit="ex",
               disable=not config.progress)

    stop = asyncio.Event()  # after a failure no new request starts; finished ids stay committed

    async def one(example: schema.Example) -> None:
        async with semaphore:
            if stop.is_set():
                return
            prompt = template.render(example)
            try:
                completions = [await teacher.complete(prompt, example) for _ in range(config.num_samples)]
            except backends.TeacherError:
                stop.set()
                raise
        stats = teacher.stats
        # The segment's running totals ride along, so a segment that is SIGKILLed still counts
        # (up to its last committed output) in the manifest's wall time and requests.
        log.append({"id": example.id, "outputs": [c.text for c in completions],
                    "prompt_tokens": sum(c.prompt_tokens for c in completions),
                    "completion_tokens": sum(c.completion_tokens for c in completions),
                    "segment": segment, "elapsed_s": round(time.time() - started, 3),
                    "requests": stats.requests, "retries": stats.retries})
        counters["done"] += 1
        bar.set_postfix(retries=stats.retries, failures=counters["failed"],
                        tokens=stats.prompt_tokens + stats.completion_tokens, refresh=False)
        bar.update(1)

    tasks = [asyncio.ensure_future(one(example)) for example in todo]
    try:
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except backends.TeacherError:
                counters["failed"] += 1
                raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        bar.close()


def _vote(spec: specs.DatasetSpec, example: schema.Example, outputs: list[str], filter_labels: bool,
          meta: Mapping[str, Any]) -> tuple[schema.Example, bool]:
    """Parses the k outputs; the majority label wins and only agreeing rationales are kept."""
    parsed = [attach_teacher_output(example, spec, output, filter_labels=filter_labels, extra_meta=meta)
              for output in outputs]
    if len(parsed) == 1:
        return parsed[0], True
    votes = collections.Counter(p.teacher_label for p in parsed if p.teacher_label is not None)
    if not votes:
        return parsed[0], True
    label, count = votes.most_common(1)[0]
    agreeing = [p for p in parsed if p.teacher_label == label]
    best = agreeing[0]
    rationales = tuple(dict.fromkeys(r for p in agreeing for r in p.rationales))
    meta = {**best.teacher_meta, "votes": count, "samples": len(outputs)}
    return best.replace(rationales=rationales, teacher_meta=meta), count == len(outputs)


def _segments(work_dir: str, log: ProgressLog) -> dict[int, dict]:
    """Totals of the shard's earlier runs: exact for the runs that ended (SEGMENTS), and up to the
    last committed output for runs that were killed (from the progress log's running totals)."""
    ended: dict[int, dict] = {}
    path = os.path.join(work_dir, SEGMENTS)
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                    ended[int(record["segment"])] = record
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line of a killed run
    killed: dict[int, dict] = {}
    for record in log.records.values():
        segment = record.get("segment")
        if segment is None or segment in ended:
            continue
        totals = killed.setdefault(segment, {"segment": segment, "wall_time_s": 0.0, "requests": 0, "retries": 0})
        totals["wall_time_s"] = max(totals["wall_time_s"], record.get("elapsed_s", 0.0))
        totals["requests"] = max(totals["requests"], record.get("requests", 0))
        totals["retries"] = max(totals["retries"], record.get("retries", 0))
    return {**killed, **ended}


def _end_segment(work_dir: str, segment: int, wall: float, stats) -> dict:
    record = {"segment": segment, "wall_time_s": round(wall, 3), "requests": stats.requests,
              "retries": stats.retries}
    with open(os.path.join(work_dir, SEGMENTS), "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return record


def _drop_short_rationales(example: schema.Example, min_chars: int) -> tuple[schema.Example, int]:
    """Removes rationales shorter than `min_chars` (junk such as "A:."); returns how many."""
    kept = tuple(r for r in example.rationales if len(r.strip()) >= min_chars)
    dropped = len(example.rationales) - len(kept)
    return (example.replace(rationales=kept) if dropped else example), dropped


def _check_parse_rate(config: JobConfig, voted: list[schema.Example], work_dir: str, piece: dict) -> dict:
    """The shard's parse stats; `BelowMinParseRate` (and report.json) below --min_parse_rate."""
    failures = collections.Counter(e.teacher_meta.get("parse_failure") for e in voted)
    failures.pop(None, None)
    parsed = len(voted) - sum(failures.values())
    rate = round(parsed / len(voted), 6) if voted else None
    quality = {"parse_rate": rate, "min_parse_rate": config.min_parse_rate,
               "min_rationale_chars": config.min_rationale_chars, "parse_failures": dict(sorted(failures.items()))}
    if rate is not None and rate < config.min_parse_rate:
        report = os.path.join(work_dir, REPORT)
        with open(report + ".tmp", "w") as f:
            json.dump({**piece, **quality}, f, indent=1, sort_keys=True)
        os.replace(report + ".tmp", report)
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(failures.items()))
        raise BelowMinParseRate(
            f"parse rate {rate:.1%} ({parsed}/{len(voted)} outputs) is below --min_parse_rate "
            f"{config.min_parse_rate:g} (failures: {reasons}); nothing was written to "
            f"{os.path.join(config.out, config.dataset)}, the outputs are committed in {work_dir} ({REPORT}). "
            "Fix --prompt_file/--model, or accept them with --min_parse_rate 0 (no new requests).")
    return quality


def run_job(config: JobConfig) -> dict:
    """Runs (or resumes) one shard of a rationale job; merges when it is the only shard.

    Every check that can refuse (arguments, --out ownership, the lock) runs before the first
    request, and a refusal leaves --out as it was.

    Returns:
      The shard's manifest piece, or the dataset manifest after the merge when num_shards == 1.
    """
    problem = flags.check_writable(config.out, "--out")
    if problem:
        raise ValueError(problem)
    if config.src is not None and not fs.exists(config.src):
        raise FileNotFoundError(f"--src {config.src} does not exist; pass a release root, a dataset dir written by "
                                "`dsbs import`, or check the path.")
    spec = specs.get_spec(config.dataset, data_dir=config.src)
    template = prompts.load_prompt(spec, config.prompt_file) if config.teacher != "annotations" else None
    work_dir = _work_dir(config)
    fingerprint = {**config.fingerprint(), "prompt_sha256": template.sha256 if template else None}
    job_id = _job_id(fingerprint)
    _check_owner(config, job_id, _check_fingerprint(work_dir, fingerprint, write=False))
    examples = read_inputs(config, spec)
    with JobLock(os.path.join(work_dir, "lock")):
        resuming = _check_fingerprint(work_dir, fingerprint)
        _check_owner(config, job_id, resuming)  # again, now that no other job can write
        return _run_locked(config, spec, template, examples, work_dir, fingerprint, job_id)


def _run_locked(config, spec, template, examples, work_dir, fingerprint, job_id) -> dict:
    mine = [e for e in examples if shard_of(e.id, config.num_shards) == config.shard_index]
    log = ProgressLog(os.path.join(work_dir, "progress.jsonl"))
    earlier = _segments(work_dir, log)
    segment = 1 + max([*earlier, *(r.get("segment", 0) or 0 for r in log.records.values()), 0])
    todo = [e for e in mine if e.id not in log]
    counters = collections.Counter()
    started = time.time()
    teacher = make_teacher(config, spec)
    template = template or prompts.PromptTemplate("{input}", "<annotations>")

    async def main():
        async with teacher:
            await _generate_all(config, teacher, template, todo, log, counters, segment, started)

    try:
        asyncio.run(main())
    finally:
        log.close()
        current = _end_segment(work_dir, segment, time.time() - started, teacher.stats)
    segments = {**earlier, segment: current}

    teacher_meta = {"teacher": teacher.describe()["backend"], "model": config.model}
    voted, unanimous, short = [], 0, 0
    for example in mine:
        record = log.records[example.id]
        final, all_agree = _vote(spec, example, record["outputs"], config.filter_labels, teacher_meta)
        if config.min_rationale_chars:
            final, dropped_short = _drop_short_rationales(final, config.min_rationale_chars)
            short += dropped_short
        unanimous += all_agree
        voted.append(final)
    finals = [e for e in voted if not (config.filter_disagreeing and e.label is not None
                                       and e.teacher_label != e.label)]
    wall = sum(s["wall_time_s"] for s in segments.values())
    piece = {
        "shard_index": config.shard_index, "num_shards": config.num_shards, "job_id": job_id,
        "num_inputs_total": len(examples), "assigned_ids": sorted(e.id for e in mine),
        "teacher": teacher.describe(), "prompt_sha256": fingerprint["prompt_sha256"],
        "prompt_file": template.path, "num_samples": config.num_samples,
        "self_consistency_unanimous": unanimous, "filtered_disagreeing": len(voted) - len(finals),
        "num_short_rationales": short,
        # Over every run (segment) of this shard, not only the last one.
        "requests": sum(s["requests"] for s in segments.values()),
        "retries": sum(s["retries"] for s in segments.values()),
        "segments": len(segments), "resumed_with": len(mine) - len(todo),
        "input_tokens": sum(log.records[e.id]["prompt_tokens"] for e in mine),
        "output_tokens": sum(log.records[e.id]["completion_tokens"] for e in mine),
        "wall_time_s": round(wall, 3),
        "outputs_per_s": round(len(mine) / wall, 3) if wall > 0 and mine else None,
    }
    piece.update(_check_parse_rate(config, voted, work_dir, piece))
    _write_shard(config, finals, piece)
    if config.num_shards == 1:
        return merge(config.out, config.dataset, config.split, 1)
    return piece


def _write_shard(config: JobConfig, examples: list[schema.Example], piece: dict) -> None:
    """Writes the shard's TFRecord file (temp dir, then rename) and its manifest piece."""
    work_dir = _work_dir(config)
    staging = os.path.join(work_dir, "staging")
    tfrecords.remove_dir(staging)
    entry = tfrecords.write_split(staging, config.split, examples, num_shards=1)
    final = tfrecords.shard_name(config.split, config.shard_index, config.num_shards)
    fs.rename(os.path.join(staging, entry["files"][0]),
                       os.path.join(config.out, config.dataset, final), overwrite=True)
    piece = {**piece, "file": final, "sha256": entry["sha256"][entry["files"][0]]}
    path = os.path.join(work_dir, "piece.json")
    with fs.GFile(path + ".tmp", "w") as f:
        json.dump(piece, f, indent=1, sort_keys=True)
    fs.rename(path + ".tmp", path, overwrite=True)
    tfrecords.remove_dir(staging)


def merge(out: str, dataset: str, split: str, num_shards: int) -> dict:
    """Checks the shards cover every input id exactly once and records the split in the manifest."""
    dataset_dir = os.path.join(out, dataset)
    pieces = []
    for index in range(num_shards):
        tag = f"{split}.shard-{index:05d}-of-{num_shards:05d}"
        path = os.path.join(dataset_dir, WORK_DIR, tag, "piece.json")
        if not fs.exists(path):
            raise FileNotFoundError(f"Shard {index} of {num_shards} is not finished ({path} missing): run "
                                    f"`dsbs rationales ... --num_shards {num_shards} --shard_index {index}` first.")
        with fs.GFile(path) as f:
            pieces.append(json.load(f))
    totals = {p["num_inputs_total"] for p in pieces}
    if len(totals) != 1:
        raise ValueError(f"Shards of {dataset}/{split} saw different input counts {sorted(totals)}; re-run them "
                         "with the same --src and --limit.")
    assigned = collections.Counter(i for p in pieces for i in p["assigned_ids"])
    duplicates = [i for i, n in assigned.items() if n > 1]
    if duplicates or sum(assigned.values()) != totals.pop():
        raise ValueError(f"Shards of {dataset}/{split} do not cover the inputs exactly once: "
                         f"{len(assigned)} ids assigned, duplicates {duplicates[:5]}.")
    written = collections.Counter()
    examples = []
    for piece in pieces:
        for example in tfrecords.read_records(os.path.join(dataset_dir, piece["file"])):
            written[example.id] += 1
            examples.append(example)
    extra = [i for i, n in written.items() if n > 1 or i not in assigned]
    dropped = sum(p["filtered_disagreeing"] for p in pieces)
    if extra or len(written) + dropped != len(assigned):
        raise ValueError(f"Shard files of {dataset}/{split} hold {len(written)} ids (+{dropped} filtered) for "
                         f"{len(assigned)} inputs; unexpected or repeated ids: {extra[:5]}.")
    summed = {key: sum(p.get(key) or 0 for p in pieces) for key in (
        "requests", "retries", "input_tokens", "output_tokens", "self_consistency_unanimous", "filtered_disagreeing",
        "num_short_rationales")}
    wall = max(p["wall_time_s"] for p in pieces)  # shards run side by side on their hosts
    job_ids = {p.get("job_id") for p in pieces}
    split_extra = {**summed, "wall_time_s": wall, "num_shards_merged": num_shards,
                   "segments": max(p.get("segments", 1) for p in pieces),
                   "outputs_per_s": round(len(assigned) / wall, 3) if wall else None,
                   "created_by": {"command": "dsbs rationales", "job": job_ids.pop() if len(job_ids) == 1 else None}}
    for key in ("min_parse_rate", "min_rationale_chars"):
        if key in pieces[0]:
            split_extra[key] = pieces[0][key]
    manifest_extra = {"teacher": pieces[0]["teacher"], "prompt_sha256": pieces[0]["prompt_sha256"],
                      "num_samples": pieces[0]["num_samples"]}
    # Shard jobs of other splits may merge into the same manifest at the same time (a local
    # lock; object stores have no flock, and there one merge per dataset at a time is the rule).
    lock = (contextlib.nullcontext() if fs.is_url(dataset_dir)
            else JobLock(os.path.join(dataset_dir, WORK_DIR, "manifest.lock"), wait=True))
    with lock:
        return tfrecords.record_split(dataset_dir, split, examples, [p["file"] for p in pieces],
                                      manifest_extra=manifest_extra, split_extra=split_extra)
