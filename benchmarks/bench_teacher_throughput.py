"""Rationale-job throughput (outputs/s) vs concurrency against a local llama.cpp server, compared
with the server's own saturated throughput measured in the same run by a minimal raw client.

    python benchmarks/bench_teacher_throughput.py --requests 16 --max_tokens 32

llama-cpp-python's server decodes one request at a time (no parallel slots), so its saturated
throughput is what a raw client gets with requests always queued (4 threads here); the job should
reach >= 90 % of it at concurrency >= 2. Uses real CQA inputs from ../shared/data/dsbs_release.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import tempfile
import time
import urllib.request

from dsbs_jax.data import specs
from dsbs_jax.rationales import prompts
from dsbs_jax.rationales.job import JobConfig, read_inputs, run_job
from dsbs_jax.rationales.local_server import start_llama_server

RELEASE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "dsbs_release")


def raw_throughput(url: str, prompt_texts: list[str], max_tokens: int, threads: int) -> float:
    """Outputs/s of bare HTTP requests (no retries, parsing or bookkeeping)."""
    body = lambda p: json.dumps({"model": "smollm2", "prompt": p, "max_tokens": max_tokens, "temperature": 0.0,
                                 "stop": ["\n\nQ:"]}).encode()

    def one(prompt: str) -> None:
        request = urllib.request.Request(f"{url}/v1/completions", data=body(prompt),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, prompt_texts))
    return len(prompt_texts) / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--concurrency", default="1,2,4,8")
    p.add_argument("--release", default=RELEASE)
    a = p.parse_args()
    spec = specs.get_spec("cqa")
    base = JobConfig(dataset="cqa", split="test", out="unused", src=a.release, base_url="http://x", model="smollm2",
                     limit=a.requests, max_tokens=a.max_tokens, progress=False)
    template = prompts.load_prompt(spec)
    prompt_texts = [template.render(e) for e in read_inputs(base, spec)]
    with start_llama_server() as url:
        raw_throughput(url, prompt_texts[:2], a.max_tokens, 1)  # warm-up
        saturated = raw_throughput(url, prompt_texts, a.max_tokens, 4)
        print(f"server saturated (raw client, 4 threads): {saturated:.3f} outputs/s")
        for concurrency in (int(c) for c in a.concurrency.split(",")):
            out = tempfile.mkdtemp()
            try:
                started = time.perf_counter()
                run_job(JobConfig(**{**base.__dict__, "out": out, "base_url": url, "concurrency": concurrency}))
                rate = a.requests / (time.perf_counter() - started)
            finally:
                shutil.rmtree(out)
            print(f"job concurrency {concurrency}: {rate:.3f} outputs/s = {100 * rate / saturated:.0f} % of saturated "
                  "(includes reading inputs and writing TFRecords + manifest)")


if __name__ == "__main__":
    main()
