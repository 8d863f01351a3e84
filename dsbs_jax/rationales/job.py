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
import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Iterable, Mapping, Optional

import gin

from dsbs_jax.data import schema, specs, tfrecords
from dsbs_jax.data.adapters import attach_teacher_output
from dsbs_jax.rationales import backends, prompts
from dsbs_jax.rationales.ratelimit import RateLimiter
from dsbs_jax.rationales.store import ProgressLog

WORK_DIR = "_work"


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

    def __post_init__(self):
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
        return {k: getattr(self, k) for k in keep}


def shard_of(example_id: str, num_shards: int) -> int:
    """Deterministic shard of an id (the same on every host and Python version)."""
    return int.from_bytes(hashlib.sha256(example_id.encode("utf-8")).digest()[:8], "big") % num_shards


def read_inputs(config: JobConfig, spec: specs.DatasetSpec) -> list[schema.Example]:
    """The split's examples from a release dir, a TFRecord dataset dir, or a JSONL/CSV file."""
    from dsbs_jax.data import adapters

    src = config.src
    if src is None:
        raise ValueError("--src is required: a release root, a dataset dir from `dsbs import`, or a JSONL/CSV file.")
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


def _check_fingerprint(work_dir: str, fingerprint: Mapping[str, Any]) -> None:
    path = os.path.join(work_dir, "job.json")
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        changed = {k: (previous.get(k), v) for k, v in fingerprint.items() if previous.get(k) != v}
        if changed:
            raise ValueError(f"{work_dir} holds progress of a job with other arguments {changed} (before, now). "
                             "Re-run with the same arguments to resume, or use another --out.")
        return
    os.makedirs(work_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(dict(fingerprint), f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


async def _generate_all(config, teacher, template, todo: list[schema.Example], log: ProgressLog, counters) -> None:
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
        log.append({"id": example.id, "outputs": [c.text for c in completions],
                    "prompt_tokens": sum(c.prompt_tokens for c in completions),
                    "completion_tokens": sum(c.completion_tokens for c in completions)})
        counters["done"] += 1
        stats = teacher.stats
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


def run_job(config: JobConfig) -> dict:
    """Runs (or resumes) one shard of a rationale job; merges when it is the only shard.

    Returns:
      The shard's manifest piece, or the dataset manifest after the merge when num_shards == 1.
    """
    spec = specs.get_spec(config.dataset)
    template = prompts.load_prompt(spec, config.prompt_file) if config.teacher != "annotations" else None
    examples = read_inputs(config, spec)
    mine = [e for e in examples if shard_of(e.id, config.num_shards) == config.shard_index]
    work_dir = _work_dir(config)
    fingerprint = {**config.fingerprint(), "prompt_sha256": template.sha256 if template else None}
    _check_fingerprint(work_dir, fingerprint)
    log = ProgressLog(os.path.join(work_dir, "progress.jsonl"))
    todo = [e for e in mine if e.id not in log]
    counters = collections.Counter()
    started = time.time()
    teacher = make_teacher(config, spec)
    template = template or prompts.PromptTemplate("{input}", "<annotations>")

    async def main():
        async with teacher:
            await _generate_all(config, teacher, template, todo, log, counters)

    try:
        asyncio.run(main())
    finally:
        log.close()
    wall = time.time() - started

    teacher_meta = {"teacher": teacher.describe()["backend"], "model": config.model}
    finals, unanimous, dropped = [], 0, 0
    for example in mine:
        record = log.records[example.id]
        final, all_agree = _vote(spec, example, record["outputs"], config.filter_labels, teacher_meta)
        unanimous += all_agree
        if config.filter_disagreeing and final.label is not None and final.teacher_label != final.label:
            dropped += 1
            continue
        finals.append(final)
    stats = teacher.stats
    piece = {
        "shard_index": config.shard_index, "num_shards": config.num_shards,
        "num_inputs_total": len(examples), "assigned_ids": sorted(e.id for e in mine),
        "teacher": teacher.describe(), "prompt_sha256": fingerprint["prompt_sha256"],
        "prompt_file": template.path, "num_samples": config.num_samples,
        "self_consistency_unanimous": unanimous, "filtered_disagreeing": dropped,
        "requests": stats.requests, "retries": stats.retries, "resumed_with": len(mine) - len(todo),
        "input_tokens": sum(log.records[e.id]["prompt_tokens"] for e in mine),
        "output_tokens": sum(log.records[e.id]["completion_tokens"] for e in mine),
        "wall_time_s": round(wall, 3),
        "outputs_per_s": round(len(todo) / wall, 3) if wall > 0 and todo else None,
    }
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
    import tensorflow as tf

    final = tfrecords.shard_name(config.split, config.shard_index, config.num_shards)
    tf.io.gfile.rename(os.path.join(staging, entry["files"][0]),
                       os.path.join(config.out, config.dataset, final), overwrite=True)
    piece = {**piece, "file": final, "sha256": entry["sha256"][entry["files"][0]]}
    path = os.path.join(work_dir, "piece.json")
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump(piece, f, indent=1, sort_keys=True)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    tfrecords.remove_dir(staging)


def merge(out: str, dataset: str, split: str, num_shards: int) -> dict:
    """Checks the shards cover every input id exactly once and records the split in the manifest."""
    import tensorflow as tf

    dataset_dir = os.path.join(out, dataset)
    pieces = []
    for index in range(num_shards):
        tag = f"{split}.shard-{index:05d}-of-{num_shards:05d}"
        path = os.path.join(dataset_dir, WORK_DIR, tag, "piece.json")
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Shard {index} of {num_shards} is not finished ({path} missing): run "
                                    f"`dsbs rationales ... --num_shards {num_shards} --shard_index {index}` first.")
        with tf.io.gfile.GFile(path) as f:
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
    summed = {key: sum(p[key] or 0 for p in pieces) for key in (
        "requests", "retries", "input_tokens", "output_tokens", "self_consistency_unanimous", "filtered_disagreeing")}
    wall = max(p["wall_time_s"] for p in pieces)
    split_extra = {**summed, "wall_time_s": wall, "num_shards_merged": num_shards,
                   "outputs_per_s": round(len(assigned) / wall, 3) if wall else None}
    manifest_extra = {"teacher": pieces[0]["teacher"], "prompt_sha256": pieces[0]["prompt_sha256"],
                      "num_samples": pieces[0]["num_samples"]}
    return tfrecords.record_split(dataset_dir, split, examples, [p["file"] for p in pieces],
                                  manifest_extra=manifest_extra, split_extra=split_extra)
