"""The rationale job as an Apache Beam pipeline (DirectRunner): same records and manifest as the
single-process job, against the real llama.cpp + SmolLM2 server and the counting test server;
SIGKILL mid-run and re-run asks the teacher only for what no checkpoint holds."""
import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("apache_beam")

sys.path.insert(0, os.path.dirname(__file__))
from teacher_server import FaultPlan, ServerThread  # noqa: E402

from dsbs_jax.data import specs, tfrecords  # noqa: E402
from dsbs_jax.rationales import beam_pipeline, cli, local_server, prompts  # noqa: E402
from dsbs_jax.rationales.job import JobConfig, read_inputs, run_job  # noqa: E402

MULTI = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


def _raw_records(dataset_dir: pathlib.Path, split: str = "test") -> list[bytes]:
    import tensorflow as tf

    return sorted(r for f in tfrecords.split_files(str(dataset_dir), split)
                  for r in tf.data.TFRecordDataset(f).as_numpy_iterator())


def _assert_same_job_output(single: pathlib.Path, beam: pathlib.Path, n: int) -> None:
    """Byte-identical records (any order) and the same manifest counts; SeqIO reads both."""
    single_manifest, beam_manifest = (tfrecords.read_manifest(str(d)) for d in (single, beam))
    want, got = single_manifest["splits"]["test"], beam_manifest["splits"]["test"]
    assert got["runner"] == "DirectRunner" and got["num_examples"] == n
    assert beam_pipeline.counts(got) == {k: v for k, v in beam_pipeline.counts(want).items()}
    assert set(got) - set(want) == {"runner"}  # the same fields, plus which runner wrote them
    for key in ("teacher", "prompt_sha256", "num_samples", "dataset", "schema_version"):
        assert beam_manifest[key] == single_manifest[key], key
    records = _raw_records(beam)
    assert len(records) == n and records == _raw_records(single)
    assert len({e.id for e in tfrecords.read_split(str(beam), "test", verify=True)}) == n

    from tasks import sources

    source = sources.make_source(str(beam), {"test": "test"})
    assert sum(1 for _ in source.get_dataset("test", shuffle=False).as_numpy_iterator()) == n


@pytest.mark.skipif(not local_server.llama_server_available(), reason=local_server.INSTALL_HINT)
def test_direct_runner_two_processes_matches_single_process_on_real_llm(release_dir, tmp_path):
    n = 20
    common = ["--dataset", "cqa", "--split", "test", "--src", str(release_dir), "--model", "smollm2", "--limit",
              str(n), "--max_tokens", "48", "--concurrency", "2", "--temperature", "0", "--no_progress"]
    with local_server.start_llama_server() as url:
        assert cli.main(common + ["--base_url", url, "--out", str(tmp_path / "single")]) == 0
        assert cli.main(common + ["--base_url", url, "--out", str(tmp_path / "beam"), "--runner", "DirectRunner",
                                  *MULTI]) == 0
    _assert_same_job_output(tmp_path / "single" / "cqa", tmp_path / "beam" / "cqa", n)
    entry = tfrecords.read_manifest(str(tmp_path / "beam" / "cqa"))["splits"]["test"]
    assert entry["requests"] == n and entry["input_tokens"] > n * 100  # the few-shot prompt went to the LLM


def _prompt_ids(release_dir, n: int) -> dict:
    config = JobConfig(dataset="cqa", split="test", out="unused", src=str(release_dir), base_url="http://x",
                       model="toy", limit=n)
    spec = specs.get_spec("cqa")
    template = prompts.load_prompt(spec)
    return {template.render(e): e.id for e in read_inputs(config, spec)}


def _asked(server, prompt_ids: dict) -> collections.Counter:
    return collections.Counter(prompt_ids[seen["body"]["prompt"]] for seen in list(server.plan.seen))


def _beam_command(url, release_dir, out, n):
    return [sys.executable, "-m", "dsbs_jax.cli", "rationales", "--dataset", "cqa", "--split", "test", "--src",
            str(release_dir), "--out", str(out), "--base_url", url, "--model", "toy", "--limit", str(n),
            "--concurrency", "2", "--no_progress", "--runner", "DirectRunner", *MULTI, "--requests_per_batch", "2"]


def _checkpointed(out: pathlib.Path) -> set:
    work = str(out / "cqa" / "_work" / "test.beam")
    return {i for path in beam_pipeline.checkpoint_files(work) for i, _ in beam_pipeline.read_answered(path)}


def test_sigkill_and_rerun_asks_only_for_missing_ids(release_dir, tmp_path):
    n, per_batch, workers = 40, 2, 2
    prompt_ids = _prompt_ids(release_dir, n)
    with ServerThread(FaultPlan(delay_s=0.15)) as server:
        out = tmp_path / "beam"
        # start_new_session: SIGKILL goes to the whole process group, the SDK worker processes too.
        process = subprocess.Popen(_beam_command(server.url, release_dir, out, n), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while len(_checkpointed(out)) < 8 and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        time.sleep(1.0)  # let anything the killed workers still had on the wire arrive
        first_run = _asked(server, prompt_ids)
        committed = _checkpointed(out)
        assert 8 <= len(committed) < n, len(committed)
        assert not (out / "cqa" / "manifest.json").exists()
        in_flight = set(first_run) - committed  # asked, but the killed batch never reached its checkpoint
        assert len(in_flight) <= workers * per_batch

        subprocess.run(_beam_command(server.url, release_dir, out, n), check=True, capture_output=True)
        total = _asked(server, prompt_ids)

    rerun = total - first_run
    assert set(rerun) == set(prompt_ids.values()) - committed and all(c == 1 for c in rerun.values())
    assert all(total[i] == 1 for i in committed)  # a committed id is never asked again
    assert {i for i, c in total.items() if c > 1} <= in_flight and all(c <= 2 for c in total.values())

    got = list(tfrecords.read_split(str(out / "cqa"), "test", verify=True))
    assert len(got) == n and len({e.id for e in got}) == n  # exactly one record per id
    assert not list((out / "cqa").glob("beam-temp-*"))
    entry = tfrecords.read_manifest(str(out / "cqa"))["splits"]["test"]
    assert entry["num_examples"] == n and entry["requests"] == n - len(committed) and entry["parse_rate"] == 1.0
    assert all(e.teacher_label == e.choices[0] for e in got)


def test_in_memory_runner_matches_single_process_and_resumes(release_dir, tmp_path):
    n = 12
    with ServerThread(FaultPlan()) as server:
        common = dict(dataset="cqa", split="test", src=str(release_dir), base_url=server.url, model="toy", limit=n,
                      progress=False)
        run_job(JobConfig(**common, out=str(tmp_path / "single")))
        config = JobConfig(**common, out=str(tmp_path / "beam"))
        beam_pipeline.run_beam_job(config, "DirectRunner", ["--output_shards", "3"])
        _assert_same_job_output(tmp_path / "single" / "cqa", tmp_path / "beam" / "cqa", n)
        assert tfrecords.read_manifest(str(tmp_path / "beam" / "cqa"))["splits"]["test"]["files"] == [
            f"test.tfrecord-0000{i}-of-00003" for i in range(3)]
        before = len(server.plan.seen)
        manifest = beam_pipeline.run_beam_job(config, "DirectRunner", ["--output_shards", "3"])
        assert len(server.plan.seen) == before  # everything came from the checkpoint
        assert manifest["splits"]["test"]["requests"] == 0 and manifest["splits"]["test"]["num_examples"] == n
    assert len(_raw_records(tmp_path / "beam" / "cqa")) == n


def test_usage_errors_are_one_line_and_exit_2(release_dir, tmp_path, capsys):
    base = ["--dataset", "cqa", "--split", "test", "--src", str(release_dir), "--out", str(tmp_path),
            "--base_url", "http://127.0.0.1:9", "--model", "toy", "--runner", "DirectRunner"]
    assert cli.main(base + ["--num_shards", "2"]) == 2
    assert cli.main(base + ["--direct_num_wrokers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--num_shards" in err[0] and "--direct_num_wrokers" in err[1]
    with pytest.raises(SystemExit) as exit_info:  # Beam flags without --runner: argparse's usage error
        cli.main(base[:-2] + ["--direct_num_workers", "2"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "cqa" / "manifest.json").exists()


def test_jax_teacher_runs_as_a_dofn(tmp_path, spm_model):
    from dsbs_jax.data import schema
    from dsbs_jax.models import checkpoints, network
    from dsbs_jax.models.config import t5_1_1_config

    params = network.unbox_params(network.init_params(t5_1_1_config("tiny", vocab_size=512)))
    checkpoint = checkpoints.save_t5x_checkpoint(params, str(tmp_path / "teacher"), step=1)
    src = tmp_path / "src" / "cqa"
    choices = ("river", "ocean", "lake", "pond", "sea")
    examples = [schema.Example(id=f"j{i}", dataset="cqa", split="test", label=choices[i % 5], choices=choices,
                               input=f"Where do fish {i} live?\nAnswer Choices:\n" + "\n".join(
                                   f"({l}) {c}" for l, c in zip("abcde", choices))) for i in range(6)]
    tfrecords.write_split(str(src), "test", examples)
    config = JobConfig(dataset="cqa", split="test", out=str(tmp_path / "out"), src=str(src), teacher="jax",
                       jax_checkpoint=checkpoint, spm_path=spm_model, batch_size=4, max_tokens=8, progress=False)
    manifest = beam_pipeline.run_beam_job(config, "DirectRunner")
    entry = manifest["splits"]["test"]
    assert entry["num_examples"] == 6 and entry["requests"] == 6 and entry["num_with_teacher_output"] == 6
    assert manifest["teacher"]["backend"] == "jax" and manifest["teacher"]["batch_size"] == 4
    got = {e.id: e for e in tfrecords.read_split(str(tmp_path / "out" / "cqa"), "test", verify=True)}
    assert set(got) == {e.id for e in examples}
    assert all(len(e.teacher_meta["output_sha256"]) == 64 for e in got.values())
    assert json.loads(json.dumps(entry["parse_failures"])) == entry["parse_failures"]


def test_each_teacher_instance_gets_its_share_of_the_rate_limits(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    assert beam_pipeline.default_teacher_instances(PipelineOptions(MULTI, runner="DirectRunner")) == 2
    assert beam_pipeline.default_teacher_instances(PipelineOptions([], runner="DirectRunner")) == 1  # in memory
    dataflow = ["--max_num_workers", "8", "--number_of_worker_harness_threads", "1"]
    assert beam_pipeline.default_teacher_instances(PipelineOptions(dataflow, runner="DataflowRunner")) == 8
    assert beam_pipeline.default_teacher_instances(
        PipelineOptions(dataflow + ["--teacher_instances", "3"], runner="DataflowRunner")) == 3
    config = JobConfig(dataset="cqa", split="test", out=str(tmp_path), src="unused", base_url="http://127.0.0.1:9",
                       model="toy", requests_per_minute=600, tokens_per_minute=90000, max_retries=2)
    dofn = beam_pipeline._make_ask_teacher()(dict(vars(config)), 4)
    dofn.setup()  # what each worker does once: its own client, a quarter of each limit
    try:
        assert dofn.teacher.limiter.requests.capacity == 150 and dofn.teacher.limiter.tokens.capacity == 22500
        assert dofn.teacher.retry.max_retries == 2 and dofn.teacher.concurrency == config.concurrency
    finally:
        dofn.teardown()


def test_teacher_failure_exits_1_with_one_line_and_keeps_no_output(release_dir, tmp_path, capsys):
    with ServerThread(FaultPlan(default="401")) as server:
        code = cli.main(["--dataset", "cqa", "--split", "test", "--src", str(release_dir), "--out", str(tmp_path),
                         "--base_url", server.url, "--model", "toy", "--limit", "4", "--runner", "DirectRunner"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HTTP 401" in err[0] and "re-run the same command" in err[0]
    assert not (tmp_path / "cqa" / "manifest.json").exists() and not list((tmp_path / "cqa").glob("test.tfrecord*"))
