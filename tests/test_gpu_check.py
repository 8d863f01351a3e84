"""benchmarks/gpu_check.sh: the CPU dry run exercises every code path; no GPU -> one-line refusal.

The dry run is a real subprocess of the shell wrapper, with TensorFlow, SeqIO and gin-config made
unimportable (as on the GPU machine). Its FLOPs are checked against an independent lowering of
the same tiny train step here, and its MFU against the formula. No timing assertions.
"""
import glob
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402  (stdlib + dsbs_jax.flags at import time)
import gpu_check_report  # noqa: E402


def _has_gpu() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def _env(tmp_path, **extra):
    env = dict(os.environ, PYTHON=sys.executable, **extra)
    blocked = tmp_path / "blocked"
    for name in ("tensorflow", "seqio", "gin"):  # absent on the GPU machine
        (blocked / name).mkdir(parents=True, exist_ok=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by test_gpu_check')\n")
    env["PYTHONPATH"] = str(blocked)
    return env


def _table(markdown: str):
    """metric -> list of the row's cells, from the report's one markdown table."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| metric") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def _number(cell: str) -> float:
    return float(re.match(r"[-+0-9.eE]+", cell).group(0))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "report" / "x.md"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry_run", "--out", str(out)], cwd=tmp,
                          env=_env(tmp, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out.read_text(), json.loads(out.with_suffix(".json").read_text())


def test_dry_run_table_rows_and_numbers(dry_run):
    proc, markdown, result = dry_run
    assert "CPU tiny dry run (not a measurement)" in markdown
    assert markdown in proc.stdout  # also printed
    for stage in ("ours: build + compile train step", "decode: ours compile (first call)"):
        assert re.search(rf"\[gpu_check\] {re.escape(stage)}: [0-9.]+ s \(total", proc.stdout)
    rows = _table(markdown)
    expected = ["train step, best (s)", "train step, median (s)", "train tokens/s, median step",
                "model FLOPs/step, XLA cost analysis (GFLOP)", "6·N·tokens/step (GFLOP)",
                "MFU, XLA FLOPs / median step / peak", "MFU, 6·N·tokens / median step / peak",
                "measured bf16 matmul 256³ (TFLOP/s)", "decode tokens/s, best call", "decode call, median (s)",
                "decode tokens equal to HF's, fraction of tokens / of whole rows", "bf16 peak used for MFU (TFLOP/s)"]
    assert [r for r in expected if r not in rows] == []
    for metric in expected[:3] + expected[5:7] + expected[8:10]:
        ours, hf = rows[metric][0], rows[metric][1]
        for cell in (ours, hf):
            value = _number(cell)
            assert math.isfinite(value) and value > 0, (metric, cell)
    assert rows["train step, median (s)"][3] == ">= 1.3x" and rows["train step, median (s)"][4] in ("yes", "**no**")
    assert rows["MFU, XLA FLOPs / median step / peak"][3] == ">= 45 %"
    tokens, whole_rows = (float(x) for x in rows[expected[10]][0].split(" / "))
    assert 0.0 <= whole_rows <= tokens <= 1.0
    assert _number(rows["bf16 peak used for MFU (TFLOP/s)"][0]) > 0
    a = result["args"]
    assert (a["size"], a["batch"], a["input_len"], a["target_len"], a["steps"], a["warmup"], a["decode_tokens"]) == \
        ("tiny", 2, 16, 8, 1, 1, 4)
    assert result["decode"]["new_tokens"] == 4
    # The GPU machine's constraints held: nothing pulled in TensorFlow or SeqIO.
    assert result["modules"] == {"tensorflow": False, "seqio": False}
    assert result["versions"]["jax"] and result["versions"]["torch"]


def test_dry_run_mfu_is_xla_cost_analysis_over_step_time(dry_run):
    """FLOPs = an independent lowering of the same tiny step; MFU = flops / median step / peak."""
    import jax

    from dsbs_jax.models import network, partitioning
    from dsbs_jax.models.config import t5_1_1_config
    from dsbs_jax.train import optimizers, train_state, train_step
    from dsbs_jax.train.losses import LossConfig

    _, markdown, result = dry_run
    tr, a = result["train"], result["args"]
    config = t5_1_1_config("tiny", vocab_size=a["vocab_size"], dropout_rate=0.0, dtype="bfloat16")
    mesh = partitioning.create_mesh(1, 1)
    rules = partitioning.STANDARD_LOGICAL_AXIS_RULES
    tx = optimizers.make_optimizer(optimizers.OptimizerConfig("adafactor"), 1000)
    shardings = train_state.state_shardings(tx, network.abstract_params(config), mesh, rules)
    state = train_state.abstract_state(tx, network.abstract_params(config), shardings)
    tokens = lambda n: jax.ShapeDtypeStruct((a["batch"], n), np.int32)  # noqa: E731
    batch = {"encoder_input_tokens": tokens(a["input_len"]), "decoder_target_tokens": tokens(a["target_len"]),
             "decoder_input_tokens": tokens(a["target_len"]), "decoder_loss_weights": tokens(a["target_len"])}
    step = train_step.make_train_step(network.Transformer(config), LossConfig(), shardings, mesh, rules,
                                      enable_dropout=False)
    with jax.set_mesh(mesh):
        cost = step.jitted.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    assert cost["flops"] > 0
    assert tr["xla_flops"] == pytest.approx(cost["flops"], rel=1e-6)

    peak = result["peak"]["tflops"] * 1e12
    assert (tr["model_flops_source"], tr["model_flops"]) == ("XLA cost analysis", tr["xla_flops"])
    assert tr["mfu_ours"] == pytest.approx(tr["xla_flops"] / tr["ours"]["median_s"] / peak, rel=1e-9)
    assert tr["mfu_hf"] == pytest.approx(tr["xla_flops"] / tr["hf"]["median_s"] / peak, rel=1e-9)
    rows = _table(markdown)
    assert _number(rows["model FLOPs/step, XLA cost analysis (GFLOP)"][0]) == pytest.approx(
        tr["xla_flops"] / 1e9, rel=1e-5)
    assert _number(rows["MFU, XLA FLOPs / median step / peak"][0]) == pytest.approx(tr["mfu_ours"] * 100, abs=0.006)
    assert tr["ours"]["median_s"] == pytest.approx(_number(rows["train step, median (s)"][0]), abs=6e-5)
    # CPU dry run: no datasheet entry, so the peak is the matmul rate measured in the same run.
    assert result["peak"]["source"].startswith("measured bf16 matmul")
    assert result["peak"]["tflops"] == pytest.approx(result["peak"]["measured_tflops"])


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: the wrapper would run the real check")
def test_no_gpu_wrapper_refuses_in_one_line(tmp_path):
    out = tmp_path / "y.md"
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(out)], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no NVIDIA GPU visible" in lines[0] and "--dry_run" in lines[0], proc.stderr
    assert not out.exists()


def test_no_gpu_python_refuses_in_one_line(tmp_path):
    """Past the wrapper's device-file check, JAX's backend decides; still one line, no traceback."""
    env = _env(tmp_path, CUDA_VISIBLE_DEVICES="")
    env.pop("JAX_PLATFORMS", None)
    env["PYTHONPATH"] = f"{REPO}:{env['PYTHONPATH']}"
    out = tmp_path / "z.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("gpu_check: error:")]
    assert len(errors) == 1 and "sees no GPU" in errors[0] and "--dry_run" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("flag,value", [("--batch", "0"), ("--peak_tflops", "-5"), ("--steps", "x")])
def test_bad_flag_one_line_exit_2(tmp_path, flag, value):
    proc = subprocess.run(["bash", str(SCRIPT), "--dry_run", flag, value, "--out", str(tmp_path / "w.md")],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpu_check: error: argument {flag}:"), proc.stderr
    assert not (tmp_path / "w.md").exists()


def test_peak_table_lookup():
    assert gpu_check_report.lookup_peak(["NVIDIA H100 80GB HBM3"]) == ("H100 SXM", 989.0)
    assert gpu_check_report.lookup_peak(["NVIDIA H100 PCIe"]) == ("H100 PCIe", 756.0)
    assert gpu_check_report.lookup_peak(["NVIDIA H200"]) == ("H200", 989.0)
    assert gpu_check_report.lookup_peak(["NVIDIA A100-SXM4-80GB"]) == ("A100", 312.0)
    assert gpu_check_report.lookup_peak(["NVIDIA L40S"]) == ("L40S", 362.0)
    assert gpu_check_report.lookup_peak(["NVIDIA L4"]) == ("L4", 121.0)
    assert gpu_check_report.lookup_peak(["", "cpu"]) is None


def test_failed_stage_keeps_the_other_rows():
    """A stage that raised (e.g. out of memory) becomes one table row; the others still render."""
    import platform

    args = gpu_check.parse_args(["--dry_run", "--out", "/tmp/unused.md"])
    stages = gpu_check.Stages()
    oom = gpu_check._attempt("train", lambda: (_ for _ in ()).throw(MemoryError("CUDA out of memory. Tried 2 GiB")),
                             stages, verbose=False)
    decode = {"ours": gpu_check._stats([0.5, 0.25]), "hf": gpu_check._stats([1.0]), "compile_s": 3.0,
              "new_tokens": 4, "agreement": 0.75, "rows_identical": 0.5}
    device = type("Dev", (), {"platform": "cpu", "id": 0, "device_kind": platform.machine()})()
    result = gpu_check_report.summarize(args, "CPU", device, stages.seconds, 1.0, oom, decode,
                                        {"measured_tflops": 0.5})
    text = gpu_check_report.render(result)
    rows = _table(text)
    assert rows["train step"][0].startswith("failed: setup: MemoryError: CUDA out of memory")
    assert "try a smaller --batch" in rows["train step"][0] and rows["train step"][4] == "**no**"
    assert rows["decode tokens/s, best call"][:3] == ["32.0", "8.0", "4.00x"]  # 2 rows x 4 tokens / best 0.25 s
    assert result["met"] == {"mfu": False, "speedup": False}
    assert list(result["errors"]) == ["train"]
