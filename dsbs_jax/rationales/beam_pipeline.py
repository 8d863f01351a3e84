"""The rationale job as an Apache Beam pipeline (`dsbs rationales ... --runner RUNNER [beam flags]`).

    dsbs rationales --dataset cqa --split train --src RELEASE --base_url URL --model M --out DATA_ROOT \
        --runner DataflowRunner --project P --region R --temp_location gs://B/tmp --max_num_workers 8

The same job as `job.run_job`, built from its pieces (adapters, prompt, teacher backends with
their retries/backoff/rate limits, parser and vote, TFRecord schema, manifest statistics):

    read inputs ─┐                          ┌─ vote + parse ─ serialize ─ WriteToTFRecord ─┐
                 ├ CoGroupByKey(id) ─ todo ─┤                                               ├─ manifest
    checkpoint ──┘      └─ answered ────────┘─ stats combiners ─────────────────────────────┘

Exactly once where it matters:
* The teacher `DoFn` writes each answered batch to its own checkpoint file
  `{out}/{dataset}/_work/{split}.beam/answered/{uuid}.jsonl` (temp file + rename, so a file is
  whole or absent) before it emits the batch. A re-run reads every checkpoint file at start and
  asks the teacher only for the ids none of them holds.
* Records reach `{out}/{dataset}/` only through Beam's TFRecord sink, which writes a retried
  bundle's output to a fresh temp file and renames only the files of successful bundles at
  finalization; the manifest is written last (atomically), listing exactly the finalized files.

Deliberate differences from the single-process job: the record bytes and manifest counts are the
same, but the order of records inside and across shard files is the runner's (so the files and
their sha256 differ), the number of files is `--output_shards` (0: the runner's choice), and
`wall_time_s` / `outputs_per_s` time the whole pipeline (start-up and writing included).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import time
import uuid
from typing import Any, Iterable, Iterator, Optional, Sequence

from dsbs_jax.data import schema, specs, tfrecords
from dsbs_jax.data.errors import DataError
from dsbs_jax.rationales import backends, job, prompts
from dsbs_jax.rationales.store import _crc

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner", "PrismRunner")
ANSWERED_DIR = "answered"
INSTALL_HINT = 'pip install "apache-beam[tfrecord]" (or pip install -e ".[test]")'


def _gfile():
    import tensorflow as tf  # lazily, like tfrecords.py

    return tf.io.gfile


def _join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def beam_work_dir(config: job.JobConfig) -> str:
    """Progress of Beam runs of this split; separate from the single-process job's shard dirs."""
    return _join(config.out, config.dataset, job.WORK_DIR, f"{config.split}.beam")


# ---------------------------------------------------------------------------------------------
# The checkpoint of answered ids: many small immutable files, each written whole or not at all.

def write_answered(work_dir: str, records: Sequence[dict]) -> Optional[str]:
    """Commits answered records as one new checkpoint file (temp name + rename); returns its path."""
    if not records:
        return None
    gfile = _gfile()
    directory = _join(work_dir, ANSWERED_DIR)
    gfile.makedirs(directory)
    path = _join(directory, f"{uuid.uuid4().hex}.jsonl")
    lines = [json.dumps({**r, "crc": _crc(r)}, sort_keys=True) for r in records]
    with gfile.GFile(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    gfile.rename(path + ".tmp", path, overwrite=True)
    return path


def checkpoint_files(work_dir: str) -> list[str]:
    """The committed checkpoint files (temp files of a killed writer are not among them)."""
    gfile = _gfile()
    directory = _join(work_dir, ANSWERED_DIR)
    if not gfile.exists(directory):
        return []
    return sorted(_join(directory, name) for name in gfile.listdir(directory) if name.endswith(".jsonl"))


def read_answered(path: str) -> Iterator[tuple[str, dict]]:
    """(id, record) for each record of one checkpoint file whose checksum holds."""
    with _gfile().GFile(path, "r") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                crc = record.pop("crc")
            except (ValueError, KeyError):
                raise DataError(path, number, None, "unreadable checkpoint record",
                                fix="delete this file; its ids are asked again") from None
            if crc != _crc(record):
                raise DataError(path, number, "crc", "checksum mismatch", fix="delete this file; its ids are asked again")
            yield record["id"], record


def answered_ids(config: job.JobConfig) -> set[str]:
    """Ids some earlier (possibly killed) Beam run of this job already committed."""
    return {i for path in checkpoint_files(beam_work_dir(config)) for i, _ in read_answered(path)}


def check_fingerprint(work_dir: str, fingerprint: dict) -> None:
    """Refuses to resume progress of a job with other arguments (like job._check_fingerprint, gs:// too)."""
    gfile = _gfile()
    path = _join(work_dir, "job.json")
    if gfile.exists(path):
        with gfile.GFile(path) as f:
            previous = json.load(f)
        changed = {k: (previous.get(k), v) for k, v in fingerprint.items() if previous.get(k) != v}
        if changed:
            raise ValueError(f"{work_dir} holds progress of a job with other arguments {changed} (before, now). "
                             "Re-run with the same arguments to resume, or use another --out.")
        return
    gfile.makedirs(work_dir)
    with gfile.GFile(path + ".tmp", "w") as f:
        json.dump(fingerprint, f, indent=1, sort_keys=True)
    gfile.rename(path + ".tmp", path, overwrite=True)


# ---------------------------------------------------------------------------------------------
# Pipeline pieces. Configs travel as plain dicts (JobConfig is gin-decorated; dicts pickle anywhere).

def _config(config_dict: dict) -> job.JobConfig:
    return job.JobConfig(**config_dict)


def _template(config: job.JobConfig, spec: specs.DatasetSpec) -> prompts.PromptTemplate:
    if config.teacher == "annotations":
        return prompts.PromptTemplate("{input}", "<annotations>")
    return prompts.load_prompt(spec, config.prompt_file)


def _read_inputs(_: Any, config_dict: dict) -> Iterator[tuple[str, schema.Example]]:
    config = _config(config_dict)
    for example in job.read_inputs(config, specs.get_spec(config.dataset)):
        yield example.id, example


def _read_checkpoint(path: str) -> Iterator[tuple[str, dict]]:
    yield from read_answered(path)


def _route(item: tuple[str, dict]):
    """One id's input and checkpointed answers -> `todo` (main) or `answered` (tagged)."""
    import apache_beam as beam

    example_id, grouped = item
    examples, answered = list(grouped["examples"]), list(grouped["answered"])
    if not examples:
        return  # answered in a run over other inputs; the fingerprint check makes this rare
    if len(examples) > 1:
        raise DataError(None, None, "id", f"duplicate id {example_id!r} in the inputs ({len(examples)} examples)",
                        fix="ids must be unique within a split")
    if answered:
        # A retried bundle may have committed an id twice (the same answer from a deterministic
        # teacher); pick one independently of the runner's order, so every re-run agrees.
        chosen = min(answered, key=lambda r: json.dumps(r, sort_keys=True))
        yield beam.pvalue.TaggedOutput("answered", (examples[0], chosen))
    else:
        yield examples[0]


def _make_ask_teacher():
    import apache_beam as beam

    class _AskTeacher(beam.DoFn):
        """Asks the teacher for a batch of examples; one client (or loaded JAX model) per worker.

        `setup()` builds the backend once per DoFn instance (for `--teacher jax` that loads the
        checkpoint once per worker) with its share of the rate limits and its own asyncio loop;
        each batch runs `concurrency` requests at a time with the backend's retries and backoff.
        """

        def __init__(self, config_dict: dict, instances: int):
            self.config_dict, self.instances = config_dict, max(1, instances)

        def setup(self) -> None:
            config = _config(self.config_dict)
            share = lambda limit: limit / self.instances if limit else limit  # noqa: E731
            self.config = dataclasses.replace(config, requests_per_minute=share(config.requests_per_minute),
                                              tokens_per_minute=share(config.tokens_per_minute))
            self.spec = specs.get_spec(config.dataset)
            self.template = _template(config, self.spec)
            self.work_dir = beam_work_dir(config)
            self.teacher = job.make_teacher(self.config, self.spec)
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self.teacher.__aenter__())
            self.answered = beam.metrics.Metrics.counter("dsbs_rationales", "answered")
            self.retries = beam.metrics.Metrics.counter("dsbs_rationales", "retries")

        async def _ask(self, batch: Sequence[schema.Example]) -> list:
            config = self.config
            semaphore = asyncio.Semaphore(max(config.concurrency, config.batch_size if config.teacher == "jax" else 1))
            stop = asyncio.Event()  # after a failure no new request starts; finished ones are committed

            async def one(example: schema.Example) -> dict:
                async with semaphore:
                    if stop.is_set():
                        raise asyncio.CancelledError()
                    prompt = self.template.render(example)
                    try:
                        completions = [await self.teacher.complete(prompt, example)
                                       for _ in range(config.num_samples)]
                    except backends.TeacherError:
                        stop.set()
                        raise
                return {"id": example.id, "outputs": [c.text for c in completions],
                        "prompt_tokens": sum(c.prompt_tokens for c in completions),
                        "completion_tokens": sum(c.completion_tokens for c in completions)}

            return await asyncio.gather(*(one(e) for e in batch), return_exceptions=True)

        def process(self, batch: Sequence[schema.Example]):
            before = dataclasses.replace(self.teacher.stats)
            results = self.loop.run_until_complete(self._ask(batch))
            done = [(e, r) for e, r in zip(batch, results) if isinstance(r, dict)]
            write_answered(self.work_dir, [r for _, r in done])  # committed before anything is emitted
            stats = self.teacher.stats
            self.answered.inc(len(done))
            self.retries.inc(stats.retries - before.retries)
            errors = [r for r in results if isinstance(r, backends.TeacherError)]
            if errors:
                raise errors[0]  # the runner retries the bundle (or fails the job); answered ids stay committed
            for failure in results:
                if isinstance(failure, BaseException):
                    raise failure
            yield from done
            yield beam.pvalue.TaggedOutput("teacher_stats", {
                "requests": stats.requests - before.requests, "retries": stats.retries - before.retries,
                "teacher": self.teacher.describe()})

        def teardown(self) -> None:
            loop = getattr(self, "loop", None)
            if loop is not None and not loop.is_closed():
                loop.run_until_complete(self.teacher.__aexit__(None, None, None))
                loop.close()

    return _AskTeacher


def _vote(pair: tuple[schema.Example, dict], config_dict: dict) -> dict:
    """Parses one id's outputs exactly as the single-process job does (job._vote)."""
    config = _config(config_dict)
    example, record = pair
    spec = specs.get_spec(config.dataset)
    # job.run_job uses teacher.describe()["backend"], which is the --teacher name for every backend.
    meta = {"teacher": config.teacher, "model": config.model}
    final, unanimous = job._vote(spec, example, record["outputs"], config.filter_labels, meta)
    short = 0
    if config.min_rationale_chars:  # the single-process job's gate, applied at the same point
        final, short = job._drop_short_rationales(final, config.min_rationale_chars)
    dropped = config.filter_disagreeing and final.label is not None and final.teacher_label != final.label
    return {"example": None if dropped else final, "unanimous": unanimous, "dropped": dropped, "short": short,
            "parse_failure": final.teacher_meta.get("parse_failure"), "prompt_tokens": record["prompt_tokens"], "completion_tokens": record["completion_tokens"]}


def _make_combiners():
    import apache_beam as beam

    class ManifestStats(beam.CombineFn):
        """The manifest's per-split statistics (tfrecords._Stats) plus the job's own sums."""

        def create_accumulator(self):
            return {"stats": tfrecords._Stats(), "datasets": set(), "written": 0, "unanimous": 0, "dropped": 0,
                    "input_tokens": 0, "output_tokens": 0, "short": 0, "voted": 0, "parsed": 0}

        def add_input(self, acc, result: dict):
            example = result["example"]
            if example is not None:
                acc["stats"].add(example)
                acc["datasets"].add(example.dataset)
                acc["written"] += 1
            acc["unanimous"] += result["unanimous"]
            acc["dropped"] += result["dropped"]
            acc["short"] += result["short"]
            acc["voted"] += 1
            acc["parsed"] += result["parse_failure"] is None
            acc["input_tokens"] += result["prompt_tokens"]
            acc["output_tokens"] += result["completion_tokens"]
            return acc

        def merge_accumulators(self, accumulators):
            merged = self.create_accumulator()
            for acc in accumulators:
                merged["stats"].merge(acc["stats"])
                merged["datasets"] |= acc["datasets"]
                for key in ("written", "unanimous", "dropped", "input_tokens", "output_tokens", "short", "voted",
                            "parsed"):
                    merged[key] += acc[key]
            return merged

        def extract_output(self, acc):
            return acc

    class TeacherStats(beam.CombineFn):
        """Requests and retries summed over workers; one worker's describe() for the manifest."""

        def create_accumulator(self):
            return {"requests": 0, "retries": 0, "teacher": None}

        def add_input(self, acc, item: dict):
            return {"requests": acc["requests"] + item["requests"], "retries": acc["retries"] + item["retries"],
                    "teacher": acc["teacher"] or item["teacher"]}

        def merge_accumulators(self, accumulators):
            merged = self.create_accumulator()
            for acc in accumulators:
                merged = self.add_input(merged, acc)
            return merged

        def extract_output(self, acc):
            return acc

    return ManifestStats, TeacherStats


def _publish(_: Any, files: list, stats: dict, teacher_stats: dict, num_inputs: int, config_dict: dict,
             prompt_sha256: Optional[str], started: float, runner: str) -> dict:
    """Checks coverage and writes the split's manifest entry (last, atomically), as job.merge does."""
    config = _config(config_dict)
    dataset_dir = _join(config.out, config.dataset)
    names = sorted(f.rstrip("/").rsplit("/", 1)[-1] for f in files)
    if stats["written"] + stats["dropped"] != num_inputs:
        raise ValueError(f"The pipeline wrote {stats['written']} records (+{stats['dropped']} filtered) for "
                         f"{num_inputs} inputs of {config.dataset}/{config.split}; re-run the same command.")
    gfile = _gfile()
    manifest_path = _join(dataset_dir, tfrecords.MANIFEST)
    manifest = tfrecords.read_manifest(dataset_dir) if gfile.exists(manifest_path) else {}
    old_files = set(manifest.get("splits", {}).get(config.split, {}).get("files", ()))
    for stale in old_files - set(names):  # an earlier write with other shard names
        if gfile.exists(_join(dataset_dir, stale)):
            gfile.remove(_join(dataset_dir, stale))
    rate = round(stats["parsed"] / stats["voted"], 6) if stats["voted"] else None
    if rate is not None and rate < config.min_parse_rate:  # as job._check_parse_rate: publish nothing
        for name in names:
            gfile.remove(_join(dataset_dir, name))
        raise job.BelowMinParseRate(
            f"parse rate {rate:.1%} ({stats['parsed']}/{stats['voted']} outputs) is below --min_parse_rate "
            f"{config.min_parse_rate:g}; nothing was published to {dataset_dir}. The answers stay checkpointed "
            f"in {beam_work_dir(config)}: fix --prompt_file/--model, or accept them with --min_parse_rate 0.")
    checksums = {name: tfrecords.sha256_file(_join(dataset_dir, name)) for name in names}
    teacher = teacher_stats["teacher"]
    if teacher is None:  # every id came from the checkpoint: describe a fresh client (no requests sent)
        teacher = job.make_teacher(config, specs.get_spec(config.dataset)).describe()
    wall = time.time() - started
    split_extra = {"requests": teacher_stats["requests"], "retries": teacher_stats["retries"],
                   "input_tokens": stats["input_tokens"], "output_tokens": stats["output_tokens"],
                   "self_consistency_unanimous": stats["unanimous"], "filtered_disagreeing": stats["dropped"],
                   "wall_time_s": round(wall, 3), "num_shards_merged": 1,
                   "outputs_per_s": round(num_inputs / wall, 3) if wall else None, "runner": runner,
                   "num_short_rationales": stats["short"], "min_parse_rate": config.min_parse_rate,
                   "min_rationale_chars": config.min_rationale_chars, "segments": 1,
                   "created_by": {"command": "dsbs rationales", "job": job._job_id(
                       {**config.fingerprint(), "prompt_sha256": prompt_sha256})}}
    manifest_extra = {"teacher": teacher, "prompt_sha256": prompt_sha256, "num_samples": config.num_samples}
    return tfrecords._record_in_manifest(dataset_dir, config.split, manifest, stats["stats"], stats["datasets"],
                                         names, checksums, manifest_extra, split_extra)


# ---------------------------------------------------------------------------------------------

def default_teacher_instances(options) -> int:
    """How many teacher DoFn instances share --rpm/--tpm, from the runner's own parallelism flags."""
    from apache_beam.options import pipeline_options as po

    explicit = options.view_as(RationaleBeamOptions()).teacher_instances
    if explicit:
        return explicit
    runner = options.view_as(po.StandardOptions).runner or ""
    if "Direct" in runner:
        direct = options.view_as(po.DirectOptions)
        if direct.direct_running_mode == "in_memory":
            return 1
        return direct.direct_num_workers or os.cpu_count() or 1  # 0 means one worker per core
    if "Dataflow" in runner:
        workers = options.view_as(po.WorkerOptions)
        # Each SDK harness thread holds its own DoFn instance (and client); docs/rationales.md
        # recommends one thread and one SDK process per worker when limits matter.
        threads = options.view_as(po.DebugOptions).number_of_worker_harness_threads or 1
        return (workers.max_num_workers or workers.num_workers or 1) * threads
    return 1


_OPTIONS_CLASS = None


def RationaleBeamOptions():  # noqa: N802 (a class, built lazily so the module imports without Beam)
    """The pipeline options this job adds to Beam's: `--output_shards`, `--requests_per_batch`,
    `--teacher_instances`."""
    global _OPTIONS_CLASS
    if _OPTIONS_CLASS is None:
        from apache_beam.options.pipeline_options import PipelineOptions

        class _RationaleBeamOptions(PipelineOptions):
            @classmethod
            def _add_argparse_args(cls, parser):
                parser.add_argument("--output_shards", type=int, default=0,
                                    help="TFRecord files to write (0: the runner decides, one per bundle)")
                parser.add_argument("--requests_per_batch", type=int, default=None,
                                    help="examples per teacher DoFn call and checkpoint file "
                                         "(default 4 x --concurrency, or 2 x --batch_size for --teacher jax)")
                parser.add_argument("--teacher_instances", type=int, default=None,
                                    help="teacher DoFn instances that share --rpm/--tpm (default: from "
                                         "--direct_num_workers, or --max_num_workers x "
                                         "--number_of_worker_harness_threads on Dataflow)")

        _OPTIONS_CLASS = _RationaleBeamOptions
    return _OPTIONS_CLASS


def unknown_beam_flags(pipeline_args: Sequence[str]) -> list[str]:
    """Flags that neither Beam's options nor ours know (Beam itself would only log and drop them)."""
    import argparse

    from apache_beam.options.pipeline_options import PipelineOptions

    RationaleBeamOptions()
    parser = argparse.ArgumentParser(allow_abbrev=False)
    for cls in PipelineOptions.__subclasses__() + [c for s in PipelineOptions.__subclasses__()
                                                   for c in s.__subclasses__()]:
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            pass  # declared by two classes
    _, unknown = parser.parse_known_args(list(pipeline_args))
    return [a for a in unknown if a.startswith("--")]


def build_pipeline(pipeline, config: job.JobConfig, options, started: float):
    """Adds the job's stages to `pipeline`. Returns the PCollection of the manifest entry."""
    import apache_beam as beam
    from apache_beam.io.tfrecordio import WriteToTFRecord

    spec = specs.get_spec(config.dataset)
    template = _template(config, spec) if config.teacher != "annotations" else None
    prompt_sha256 = template.sha256 if template else None
    ours = options.view_as(RationaleBeamOptions())
    runner = options.view_as(beam.options.pipeline_options.StandardOptions).runner
    config_dict = dataclasses.asdict(config)
    per_batch = ours.requests_per_batch or (2 * config.batch_size if config.teacher == "jax"
                                            else 4 * max(1, config.concurrency))
    work_dir = beam_work_dir(config)
    checkpoints = checkpoint_files(work_dir)  # the finished ids of earlier runs, read at start
    ManifestStats, TeacherStats = _make_combiners()

    inputs = (pipeline | "Start" >> beam.Create([None])
              | "ReadInputs" >> beam.FlatMap(_read_inputs, config_dict))
    answered = (pipeline | "ListCheckpoints" >> beam.Create(checkpoints)
                | "ReadCheckpoints" >> beam.FlatMap(_read_checkpoint))
    routed = ({"examples": inputs, "answered": answered} | "JoinById" >> beam.CoGroupByKey()
              | "Route" >> beam.FlatMap(_route).with_outputs("answered", main="todo"))
    asked = (routed.todo
             | "Batch" >> beam.BatchElements(min_batch_size=per_batch, max_batch_size=per_batch)
             | "AskTeacher" >> beam.ParDo(_make_ask_teacher()(config_dict, default_teacher_instances(options)))
             .with_outputs("teacher_stats", main="answered"))
    results = ((asked.answered, routed.answered) | "AllAnswers" >> beam.Flatten()
               | "Vote" >> beam.Map(_vote, config_dict))
    files = (results | "Finals" >> beam.FlatMap(lambda r: [r["example"]] if r["example"] is not None else [])
             | "Serialize" >> beam.Map(schema.to_tf_example_bytes)
             | "WriteTFRecords" >> WriteToTFRecord(_join(config.out, config.dataset, config.split),
                                                   num_shards=ours.output_shards,
                                                   shard_name_template=".tfrecord-SSSSS-of-NNNNN"))
    stats = results | "ManifestStats" >> beam.CombineGlobally(ManifestStats())
    teacher_stats = asked.teacher_stats | "TeacherStats" >> beam.CombineGlobally(TeacherStats())
    num_inputs = inputs | "CountInputs" >> beam.combiners.Count.Globally()
    AsList, AsSingleton = beam.pvalue.AsList, beam.pvalue.AsSingleton
    return (pipeline | "Finish" >> beam.Create([None])
            | "WriteManifest" >> beam.Map(_publish, AsList(files), AsSingleton(stats), AsSingleton(teacher_stats),
                                          AsSingleton(num_inputs), config_dict, prompt_sha256, started, runner))


def prepare(config: job.JobConfig, runner: str, pipeline_args: Sequence[str] = ()):
    """Checks the arguments and the work dir; returns the pipeline options.

    Raises ValueError for arguments that cannot work (several host shards, unknown flags, progress
    of a job with other arguments).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    if config.num_shards != 1:
        raise ValueError("--num_shards/--shard_index split work over hosts by hand; with --runner the runner "
                         "distributes it: drop them.")
    unknown = unknown_beam_flags(pipeline_args)
    if unknown:
        raise ValueError(f"unknown flags {unknown}: neither `dsbs rationales` nor Beam's pipeline options know them.")
    options = PipelineOptions(list(pipeline_args), runner=runner)
    spec = specs.get_spec(config.dataset)
    template = _template(config, spec) if config.teacher != "annotations" else None
    check_fingerprint(beam_work_dir(config), {**config.fingerprint(),
                                              "prompt_sha256": template.sha256 if template else None})
    return options


def execute(config: job.JobConfig, options) -> dict:
    """Runs the pipeline to the end; returns the dataset manifest."""
    import apache_beam as beam

    dataset_dir = _join(config.out, config.dataset)
    gfile = _gfile()
    gfile.makedirs(dataset_dir)
    for stale in gfile.glob(_join(dataset_dir, "beam-temp-*")):  # a killed run's unfinalized sink files
        gfile.rmtree(stale)
    started = time.time()
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, options, started)
    result = pipeline.run()
    result.wait_until_finish()
    state = str(result.state)
    if "DONE" not in state:
        raise RuntimeError(f"Beam pipeline ended in state {state}; re-run the same command to resume.")
    return tfrecords.read_manifest(dataset_dir)


def run_beam_job(config: job.JobConfig, runner: str, pipeline_args: Sequence[str] = ()) -> dict:
    """Runs (or resumes) the job on a Beam runner; returns the dataset manifest."""
    return execute(config, prepare(config, runner, pipeline_args))


def counts(entry: dict) -> dict:
    """The manifest entry without what legitimately differs between runs (timing, files, runner)."""
    skip = {"wall_time_s", "outputs_per_s", "files", "sha256", "runner"}
    return {k: v for k, v in entry.items() if k not in skip}


SUMMARY_KEYS = ("num_examples", "parse_rate", "teacher_gold_agreement", "parse_failures", "retries", "input_tokens",
                "output_tokens", "wall_time_s", "outputs_per_s")


def _one_line(error: BaseException) -> str:
    """The informative line of a runner's wrapped error (Beam nests the worker's traceback in it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if "TeacherError" in line or "DataError" in line:
            return line
    return lines[-1] if lines else type(error).__name__


def cli_run(config: job.JobConfig, runner: str, pipeline_args: Sequence[str]) -> int:
    """`dsbs rationales --runner ...`: 0 and a one-line JSON summary, 2 for usage errors, 1 if the run failed."""
    import sys

    try:
        import apache_beam  # noqa: F401
    except ImportError:
        print(f"dsbs rationales: --runner needs Apache Beam: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        options = prepare(config, runner, pipeline_args)
    except ValueError as error:
        print(f"dsbs rationales: {error}", file=sys.stderr)
        return 2
    try:
        manifest = execute(config, options)
    except Exception as error:  # often the runner's wrapper around a worker's error
        print(f"dsbs rationales: Beam pipeline failed: {_one_line(error)}. Answered ids are checkpointed in "
              f"{beam_work_dir(config)}: re-run the same command to resume.", file=sys.stderr)
        return 1
    split = manifest["splits"][config.split]
    print(json.dumps({k: split.get(k) for k in SUMMARY_KEYS}, sort_keys=True))
    return 0
