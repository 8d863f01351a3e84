"""The GPU check's derived numbers (ratios, MFU against a bf16 peak) and its markdown report.

`gpu_check.py` measures; this module turns one run's raw times and FLOP counts into the JSON
result and the table, including the issue-15 targets and which of them were met.
"""
from __future__ import annotations

import datetime
import platform
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

TARGET_MFU = 0.45
TARGET_SPEEDUP = 1.3

# bf16 dense tensor-core peaks in TFLOP/s (datasheets, without sparsity), matched in order
# against the torch / JAX device name. An H100 SXM names itself "NVIDIA H100 80GB HBM3".
PEAK_BF16_TFLOPS: Tuple[Tuple[str, str, float], ...] = (
    (r"GH200", "GH200", 989.0),
    (r"H200", "H200", 989.0),
    (r"H100.*PCIe", "H100 PCIe", 756.0),
    (r"H100.*NVL", "H100 NVL", 835.0),
    (r"H100", "H100 SXM", 989.0),
    (r"H800", "H800 SXM", 989.0),
    (r"A100", "A100", 312.0),
    (r"A800", "A800", 312.0),
    (r"L40S", "L40S", 362.0),
    (r"L40\b", "L40", 181.0),
    (r"L4\b", "L4", 121.0),
    (r"A10\b", "A10", 125.0),
)


def lookup_peak(names: List[str]) -> Optional[Tuple[str, float]]:
    """(table entry, bf16 dense TFLOP/s) of the first `PEAK_BF16_TFLOPS` pattern in any name."""
    for pattern, label, tflops in PEAK_BF16_TFLOPS:
        if any(re.search(pattern, name, re.IGNORECASE) for name in names):
            return label, tflops
    return None


def _versions() -> Dict[str, str]:
    import flax
    import jax
    import jaxlib
    import optax
    import torch
    import transformers

    cuda = torch.version.cuda or "none"
    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "optax": optax.__version__, "torch": f"{torch.__version__} (CUDA {cuda})",
            "transformers": transformers.__version__}


def _fmt(x: Optional[float], spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(result: Dict[str, Any]) -> str:
    """The markdown report of one run (a failed stage shows as one row naming the error)."""
    a = result["args"]
    tr, dec, peak = result["train"], result["decode"], result["peak"]
    lines = [
        "# GPU check: dsbs-jax vs Hugging Face PyTorch",
        "",
        f"- date: {result['date']}",
        f"- mode: {result['mode']}",
        f"- device: {result['device']} (JAX: {result['jax_device']})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"- model: T5 1.1 {a['size']}, bf16 compute / fp32 params, vocab {a['vocab_size']}; train batch "
        f"{a['batch']} x ({a['input_len']} in + {a['target_len']} out); Adafactor on both sides; "
        f"{a['warmup']} warm-up + {a['steps']} timed steps per side, interleaved",
        f"- decode: greedy, batch {a['batch']}, {a['input_len']} input tokens, {a['decode_tokens']} new tokens per "
        f"row; {a['decode_repeats']} timed calls per side; HF bf16 weights, KV cache on",
        f"- bf16 peak used for MFU: {_fmt(peak['tflops'], '.4g')} TFLOP/s ({peak['source']})",
        f"- elapsed: {result['elapsed_s']:.0f} s in all; per stage: "
        + "; ".join(f"{k} {v:.1f} s" for k, v in result["stages"].items()),
        "",
        "| metric | ours (JAX) | HF PyTorch | ours vs HF | target | met |",
        "|---|---|---|---|---|---|",
    ]
    row = lambda *cells: lines.append("| " + " | ".join(cells) + " |")  # noqa: E731
    if "error" in tr:
        row("train step", f"failed: {tr['error']}", "", "", f">= {TARGET_SPEEDUP}x, >= {TARGET_MFU * 100:.0f} % MFU",
            "**no**")
    else:
        t_ours, t_hf = tr["ours"], tr["hf"]
        row("train step, best (s)", f"{t_ours['best_s']:.4f}", f"{t_hf['best_s']:.4f}", f"{tr['speedup_best']:.2f}x",
            "", "")
        row("train step, median (s)", f"{t_ours['median_s']:.4f}", f"{t_hf['median_s']:.4f}",
            f"{tr['speedup_median']:.2f}x", f">= {TARGET_SPEEDUP}x", _met(tr["speedup_median"] >= TARGET_SPEEDUP))
        row("train tokens/s, median step", f"{tr['tokens_per_s_ours']:.0f}", f"{tr['tokens_per_s_hf']:.0f}", "", "", "")
        row("model FLOPs/step, XLA cost analysis (GFLOP)",
            f"{tr['xla_flops'] / 1e9:.6g}" if tr["xla_flops"] > 0 else "n/a (none reported)", "same", "", "", "")
        row("6·N·tokens/step (GFLOP)", f"{tr['six_n_flops'] / 1e9:.6g}", "same", "", "", "")
        if tr.get("mfu_ours") is None:
            row("MFU", "n/a (no peak: pass --peak_tflops)", "", "", f">= {TARGET_MFU * 100:.0f} %", "**no**")
        else:
            label = "XLA FLOPs" if tr["model_flops_source"] == "XLA cost analysis" else "6·N·tokens (no XLA count)"
            row(f"MFU, {label} / median step / peak", f"{tr['mfu_ours'] * 100:.2f} %", f"{tr['mfu_hf'] * 100:.2f} %",
                "", f">= {TARGET_MFU * 100:.0f} %", _met(tr["mfu_ours"] >= TARGET_MFU))
            row("MFU, 6·N·tokens / median step / peak", f"{tr['mfu6n_ours'] * 100:.2f} %",
                f"{tr['mfu6n_hf'] * 100:.2f} %", "", "", "")
    row("bf16 peak used for MFU (TFLOP/s)", _fmt(peak["tflops"], ".4g"), "same", "", peak["source"], "")
    row(f"measured bf16 matmul {a['matmul_n']}³ (TFLOP/s)",
        _fmt(peak["measured_tflops"], ".4g") if "measured_error" not in peak else f"failed: {peak['measured_error']}",
        "", "", "sanity check of the peak", "")
    if "error" in dec:
        row("decode", f"failed: {dec['error']}", "", "", "", "")
    else:
        row("decode tokens/s, best call", f"{dec['tokens_per_s_ours']:.1f}", f"{dec['tokens_per_s_hf']:.1f}",
            f"{dec['speedup_best']:.2f}x", "", "")
        row("decode call, median (s)", f"{dec['ours']['median_s']:.4f}", f"{dec['hf']['median_s']:.4f}",
            f"{dec['speedup_median']:.2f}x", "", "")
        row("decode tokens equal to HF's, fraction of tokens / of whole rows",
            f"{dec['agreement']:.4f} / {dec['rows_identical']:.4f}", "", "", "reported, not a target", "")
    row("compile (s): train step / decode", f"{_fmt(tr.get('compile_s'), '.1f')} / {_fmt(dec.get('compile_s'), '.1f')}",
        "", "", "", "")
    memory = tr.get("memory") or {}
    if memory:
        row("peak device memory after training (GiB)", _fmt(memory.get("ours_peak_gib"), ".1f"),
            _fmt(memory.get("hf_peak_gib"), ".1f"), "", "", "")
    if "error" not in tr and 0 < tr["xla_flops"] < tr["six_n_flops"]:
        lines += ["", "Note: XLA's FLOP count is below the 6·N·tokens rule; its cost analysis may miss some "
                      "custom calls on this backend, so its MFU is a lower bound."]
    if result["mode"].startswith("CPU"):
        lines += ["", "CPU tiny dry run: the numbers only show that the code paths run; they are not a measurement."]
    return "\n".join(lines) + "\n"


def summarize(args, device_name: str, jax_device, stage_seconds: Dict[str, float], elapsed_s: float,
              tr: Dict[str, Any], dec: Dict[str, Any], measured: Dict[str, Any]) -> Dict[str, Any]:
    """All derived numbers (ratios, MFU, tokens/s) of one run; `tr`/`dec` may hold only an error."""
    names = [device_name, getattr(jax_device, "device_kind", "")]
    peak: Dict[str, Any] = dict(measured)
    if args.peak_tflops:
        peak.update(tflops=args.peak_tflops, source="--peak_tflops")
    elif not args.dry_run and (entry := lookup_peak(names)):
        peak.update(tflops=entry[1], source=f"datasheet table: {entry[0]}")
    elif peak.get("measured_tflops"):
        why = "CPU dry run" if args.dry_run else "device not in the table; pass --peak_tflops"
        peak.update(tflops=peak["measured_tflops"], source=f"measured bf16 matmul ({why})")
    else:
        peak.update(tflops=None, source="unknown: pass --peak_tflops")
    if "error" not in tr:
        tokens = args.batch * (args.input_len + args.target_len)
        xla = tr["xla_flops"] > 0
        tr["model_flops"] = tr["xla_flops"] if xla else tr["six_n_flops"]
        tr["model_flops_source"] = "XLA cost analysis" if xla else "6*N*tokens (XLA reported no flops)"
        for side in ("ours", "hf"):
            med = tr[side]["median_s"]
            tr[f"tokens_per_s_{side}"] = tokens / med
            if peak["tflops"]:
                tr[f"mfu_{side}"] = tr["model_flops"] / med / (peak["tflops"] * 1e12)
                tr[f"mfu6n_{side}"] = tr["six_n_flops"] / med / (peak["tflops"] * 1e12)
        tr["speedup_median"] = tr["hf"]["median_s"] / tr["ours"]["median_s"]
        tr["speedup_best"] = tr["hf"]["best_s"] / tr["ours"]["best_s"]
    if "error" not in dec:
        new = args.batch * dec["new_tokens"]
        dec["tokens_per_s_ours"] = new / dec["ours"]["best_s"]
        dec["tokens_per_s_hf"] = new / dec["hf"]["best_s"]
        dec["speedup_best"] = dec["hf"]["best_s"] / dec["ours"]["best_s"]
        dec["speedup_median"] = dec["hf"]["median_s"] / dec["ours"]["median_s"]
    met = {"mfu": tr.get("mfu_ours") is not None and tr["mfu_ours"] >= TARGET_MFU,
           "speedup": "speedup_median" in tr and tr["speedup_median"] >= TARGET_SPEEDUP}
    return {
        "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "mode": "CPU tiny dry run (not a measurement)" if args.dry_run else "GPU measurement",
        "device": device_name,
        "jax_device": f"{jax_device.platform}:{jax_device.id} {getattr(jax_device, 'device_kind', '')}".strip(),
        "host": platform.node(),
        "versions": _versions(),
        # The GPU machine has neither; a regression here would fail there at import time.
        "modules": {name: name in sys.modules for name in ("tensorflow", "seqio")},
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "json", "verbose")},
        "peak": peak,
        "train": tr,
        "decode": dec,
        "targets": {"mfu": TARGET_MFU, "speedup": TARGET_SPEEDUP},
        "met": met,
        "errors": {k: v["error"] for k, v in (("train", tr), ("decode", dec)) if "error" in v},
        "stages": dict(stage_seconds),
        "elapsed_s": elapsed_s,
    }
