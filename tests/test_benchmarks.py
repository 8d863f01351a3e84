"""Every benchmark script runs end to end at tiny sizes, so the scripts cannot rot.

Each runs once, as a real subprocess, for one timed step (or two requests); the tests check that it
exits 0 and prints finite numbers in the lines RESULTS.md quotes. They time nothing: speed is
measured by running the scripts themselves (benchmarks/RESULTS.md has the commands).
(`gpu_check.sh` and `bench_decode.py` have their own tests: test_gpu_check.py, test_bench_decode.py.)
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

from dsbs_jax.rationales import local_server

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _run(script: str, *args: str, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device, as the scripts are run
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _positive(text: str, pattern: str) -> list:
    found = re.findall(pattern, text)
    assert found, f"no line matching {pattern!r} in:\n{text[-3000:]}"
    values = [float(v) for group in found for v in (group if isinstance(group, tuple) else (group,))]
    assert all(math.isfinite(v) and v > 0 for v in values), values
    return values


def test_model_vs_pytorch_times_both_dtypes_interleaved():
    out = _run("bench_model_vs_pytorch.py", "--size", "tiny", "--vocab_size", "256", "--batch", "2",
               "--input_len", "16", "--target_len", "8", "--steps", "1", "--warmup", "1", "--breakdown")
    for dtype in ("float32", "bfloat16"):
        for side in ("jax", "torch", "jax_fwd_bwd", "torch_fwd_bwd"):
            _positive(out, rf"{side}_{dtype}\s*: median {NUMBER}s/step \(min {NUMBER}")
        _positive(out, rf"ratio jax_{dtype}/torch_{dtype} \(tokens/s\): median {NUMBER}, best-step {NUMBER}")
    assert "load(1/5/15m) after:" in out


def test_model_vs_pytorch_rejects_an_unknown_dtype():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_model_vs_pytorch.py"), "--dtypes", "float16"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--dtypes float16" in proc.stderr and "Traceback" not in proc.stderr


def test_train_step_mfu_and_input_pipeline(release_dir):
    out = _run("bench_train_step.py", "--size", "tiny", "--vocab_size", "256", "--batch", "2", "--input_len", "16",
               "--target_len", "8", "--steps", "1", "--warmup", "1", "--pipeline_batches", "3",
               "--release_dir", str(release_dir))
    _positive(out, rf"CPU peak \(best jitted 2048\^3 fp32 matmul\): {NUMBER} GFLOP/s")
    _positive(out, rf"XLA flops/step {NUMBER} GFLOP")
    _positive(out, rf"tokens/s ratio ours/torch: {NUMBER}")
    _positive(out, rf"input pipeline: {NUMBER} examples/s")


needs_llama = pytest.mark.skipif(not local_server.llama_server_available(),
                                 reason=f"llama.cpp server / SmolLM2 GGUF not installed: {local_server.INSTALL_HINT}")


@needs_llama
def test_teacher_throughput_against_a_real_llama_server(release_dir):
    out = _run("bench_teacher_throughput.py", "--requests", "2", "--max_tokens", "4", "--concurrency", "1",
               "--release", str(release_dir))
    _positive(out, rf"server saturated \(raw client, 4 threads\): {NUMBER} outputs/s")
    _positive(out, rf"job concurrency 1: {NUMBER} outputs/s = {NUMBER} % of saturated")


@needs_llama
def test_beam_rationales_every_mode(release_dir):
    out = _run("bench_beam_rationales.py", "--requests", "2", "--max_tokens", "4", "--release", str(release_dir))
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    modes = {row["mode"]: row for row in rows if "mode" in row}
    assert {"single", "shards", "beam"} <= set(modes), modes
    assert all(math.isfinite(row["outputs_per_s"]) and row["outputs_per_s"] > 0 for row in modes.values())
