"""Rationale outputs/s: one process vs per-host shards vs the Beam DirectRunner with 2 worker
processes, against one local llama.cpp server whose saturated rate is measured in the same run.

    python benchmarks/bench_beam_rationales.py --requests 16 --max_tokens 32

Every mode runs the full job (read inputs, prompt, teacher, parse, TFRecords, manifest) over the
same real CQA test inputs from ../shared/data/dsbs_release into a fresh output directory:
* `single`: `run_job` in this process, `--concurrency 2`;
* `shards`: two `dsbs rationales --num_shards 2 --shard_index i` processes at once + `merge`
  (what launch/rationales_tpu.sh does across hosts, here on one machine);
* `beam`: `dsbs rationales --runner DirectRunner --direct_num_workers 2
  --direct_running_mode multi_processing` (a subprocess, so start-up of Beam and its workers counts).
"saturated" is a bare urllib client keeping 4 requests queued (bench_teacher_throughput.py's way),
measured before the first mode and after each one; a mode's share is its rate over the mean of
the two measurements around it.
Prints one JSON line per mode and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from dsbs_jax.data import specs
from dsbs_jax.rationales import prompts
from dsbs_jax.rationales.job import JobConfig, read_inputs, run_job
from dsbs_jax.rationales.local_server import start_llama_server

sys.path.insert(0, os.path.dirname(__file__))
from bench_teacher_throughput import RELEASE, raw_throughput  # noqa: E402


def _job_flags(a, url: str, out: str) -> list[str]:
    return ["--dataset", "cqa", "--split", "test", "--src", a.release, "--base_url", url, "--model", "smollm2",
            "--limit", str(a.requests), "--max_tokens", str(a.max_tokens), "--concurrency", "2", "--out", out,
            "--no_progress", "--min_parse_rate", "0"]  # it times the job; the single mode's JobConfig gates nothing either


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--modes", default="single,shards,beam")
    p.add_argument("--release", default=RELEASE)
    a = p.parse_args()
    spec = specs.get_spec("cqa")
    base = JobConfig(dataset="cqa", split="test", out="unused", src=a.release, base_url="http://x", model="smollm2",
                     limit=a.requests, max_tokens=a.max_tokens, progress=False)
    prompt_texts = [prompts.load_prompt(spec).render(e) for e in read_inputs(base, spec)]
    dsbs = [sys.executable, "-m", "dsbs_jax.cli", "rationales"]
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg_before": os.getloadavg(),
                      "cpus": os.cpu_count(), "requests": a.requests, "max_tokens": a.max_tokens}))
    with start_llama_server() as url:
        raw_throughput(url, prompt_texts[:2], a.max_tokens, 1)  # warm-up
        saturated = raw_throughput(url, prompt_texts, a.max_tokens, 4)
        print(json.dumps({"mode": "saturated (raw client, 4 threads)", "outputs_per_s": round(saturated, 3)}))

        def single(out: str) -> None:
            run_job(JobConfig(**{**base.__dict__, "out": out, "base_url": url, "concurrency": 2}))

        def shards(out: str) -> None:
            procs = [subprocess.Popen(dsbs + _job_flags(a, url, out) + ["--num_shards", "2", "--shard_index", str(i)],
                                      stdout=subprocess.DEVNULL) for i in range(2)]
            if any(proc.wait() for proc in procs):
                raise RuntimeError("a shard process failed")
            subprocess.run(dsbs + ["merge", "--out", out, "--dataset", "cqa", "--split", "test", "--num_shards", "2"],
                           check=True, stdout=subprocess.DEVNULL)

        def beam(out: str) -> None:
            subprocess.run(dsbs + _job_flags(a, url, out) + [
                "--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
                check=True, stdout=subprocess.DEVNULL)

        # The machine is shared and its load drifts: the server's saturated rate is measured again
        # after every mode, and each mode is compared with the mean of the two measurements around it.
        for mode in a.modes.split(","):
            out = tempfile.mkdtemp()
            try:
                seconds = _timed(lambda: {"single": single, "shards": shards, "beam": beam}[mode](out))
                with open(os.path.join(out, "cqa", "manifest.json")) as f:
                    assert json.load(f)["splits"]["test"]["num_examples"] == a.requests
            finally:
                shutil.rmtree(out)
            after = raw_throughput(url, prompt_texts, a.max_tokens, 4)
            rate, around = a.requests / seconds, (saturated + after) / 2
            print(json.dumps({"mode": mode, "seconds": round(seconds, 2), "outputs_per_s": round(rate, 3),
                              "saturated_after": round(after, 3), "share_of_saturated": round(rate / around, 3),
                              "loadavg": os.getloadavg()[0]}))
            saturated = after
    print(json.dumps({"loadavg_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
