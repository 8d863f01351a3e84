"""GPU check: our train step and decoding against Hugging Face PyTorch on one NVIDIA GPU.

    bash benchmarks/gpu_check.sh                       # T5 1.1 base, ~3-4 min on an H100/H200
    bash benchmarks/gpu_check.sh --dry_run --out /tmp/x.md   # CPU, tiny dims, < 1 min

Needs only JAX (CUDA), flax, optax, torch (CUDA) and transformers: no TensorFlow, SeqIO or
gin-config (a no-op `gin.configurable` stands in when gin is absent), synthetic batches.

1. **Train step.** T5 1.1 base, bf16 activations / fp32 parameters, batch 64 x (512 input +
   128 target tokens), vocab 32128. Ours is the embedded trainer's step
   (`bench_train_step.make_our_step`: `train_step.make_train_step`, T5X loss with z-loss 1e-4,
   T5X Adafactor, donated state on a 1x1 mesh). PyTorch is HF `T5ForConditionalGeneration`
   from config (random weights), fp32 parameters, forward under `torch.autocast(bfloat16)`,
   `transformers` Adafactor with the same settings (`bench_model_vs_pytorch.make_torch_step`),
   eager (no `torch.compile`). Both optimizers are Adafactor. Steps run interleaved after
   warm-up, each followed by `jax.block_until_ready` / `torch.cuda.synchronize`.
2. **MFU** = model FLOPs / median step time / bf16 dense peak. Model FLOPs are XLA's
   `cost_analysis()` count of our compiled step (forward, backward and optimizer); the same
   figure is used for PyTorch (same network; HF's head is tied under transformers >= 5 and it
   has no z-loss, both negligible). 6 * N * tokens (N without the lookup-only embedding) is shown
   for comparison. The peak comes from `PEAK_BF16_TFLOPS` (NVIDIA datasheet dense numbers) by
   device name, `--peak_tflops`, or, for a device not in the table, the measured rate of a
   jitted bf16 `--matmul_n`^3 matmul, which is always reported as a sanity column.
3. **Decoding** at batch 64: `decoding.generate` (greedy, KV cache) against HF `generate`
   (greedy, `use_cache=True`, `min_new_tokens = max_new_tokens`), both producing exactly
   `--decode_tokens` tokens per row. Both sides hold the same random weights (HF's, converted
   with `hf_convert.hf_to_t5x_params`). HF runs with bf16 weights (`model.to(bfloat16)`, the
   faster way to serve with PyTorch); ours keeps fp32 parameters and computes in bf16, i.e. the
   same rounded weights. The EOS row of the output embedding is zeroed so that EOS is never the
   argmax and `min_new_tokens` changes nothing; ours runs with an EOS id that never occurs. The
   token agreement fraction is reported, not enforced (bf16 rounding may flip near-ties).
4. A markdown table (`--out`) and the same numbers as JSON (`--json`), with the issue-15 targets
   (MFU >= 45 %, >= 1.3x PyTorch eager).

`--dry_run` runs the same code on CPU at tiny dims (tiny config, batch 2, 16/8 tokens, 1 warm-up
and 1 timed step, 4 new tokens): a smoke test of the code paths, not a measurement.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import pathlib
import platform
import re
import statistics
import sys
import time
import traceback
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from dsbs_jax import flags  # noqa: E402  (stdlib only)

PROG = "gpu_check"
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

# Flags whose default depends on --dry_run: (real run, dry run).
_SIZED_DEFAULTS = {
    "size": ("base", "tiny"),
    "batch": (64, 2),
    "input_len": (512, 16),
    "target_len": (128, 8),
    "warmup": (3, 1),
    "steps": (20, 1),
    "decode_tokens": (128, 4),
    "decode_repeats": (3, 1),
    "matmul_n": (8192, 256),
}


class CheckError(Exception):
    """A refusal with a one-line reason (no GPU, unusable output path, bad result)."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = flags.OneLineParser(prog=PROG, description=__doc__, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    pos = flags.int_at_least(1)
    p.add_argument("--dry_run", action="store_true", help="CPU, tiny dims, 1 step: exercise the code paths")
    p.add_argument("--out", default="gpu_check.md", help="markdown table (default ./gpu_check.md)")
    p.add_argument("--json", default=None, help="the numbers as JSON (default: --out with .json)")
    p.add_argument("--size", default=None, help="t5_1_1_config size (default base; dry run tiny)")
    p.add_argument("--vocab_size", type=pos, default=32128)
    p.add_argument("--batch", type=pos, default=None, help="train and decode batch (default 64)")
    p.add_argument("--input_len", type=pos, default=None, help="train and decode input tokens (default 512)")
    p.add_argument("--target_len", type=pos, default=None, help="train target tokens (default 128)")
    p.add_argument("--warmup", type=flags.int_at_least(0), default=None, help="untimed steps per side (3)")
    p.add_argument("--steps", type=pos, default=None, help="timed train steps per side (20)")
    p.add_argument("--decode_tokens", type=pos, default=None, help="new tokens per row when decoding (128)")
    p.add_argument("--decode_repeats", type=pos, default=None, help="timed generate calls per side (3)")
    p.add_argument("--matmul_n", type=pos, default=None, help="n of the n^3 bf16 matmul rate (8192)")
    p.add_argument("--peak_tflops", type=flags.float_in(0.0, low_open=True), default=None,
                   help="bf16 dense peak of this device, overriding the built-in table")
    p.add_argument("--threads", type=pos, default=os.cpu_count() or 1, help="torch CPU threads")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    args = p.parse_args(argv)
    for name, (real, dry) in _SIZED_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, dry if args.dry_run else real)
    if args.json is None:
        args.json = str(pathlib.Path(args.out).with_suffix(".json"))
    for flag, path in (("--out", args.out), ("--json", args.json)):
        problem = flags.check_writable(os.path.dirname(os.path.abspath(path)), flag)
        if problem:
            p.error(problem)
        if os.path.isdir(path):
            p.error(f"{flag} {path} is a directory; pass a file path")
    return args


def _prepare_environment(dry_run: bool) -> None:
    """Process settings that must precede the first JAX / transformers import."""
    if dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"
    else:
        # JAX would otherwise take 75 % of the GPU up front and leave PyTorch too little.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("USE_TF", "0")  # transformers: never look for TensorFlow
    try:
        import gin  # noqa: F401
    except ImportError:
        # dsbs_jax.models.config only uses `@gin.configurable` (for the trainer's gin files);
        # the GPU machine has no gin-config, so a pass-through decorator stands in.
        stub = types.ModuleType("gin")
        stub.configurable = lambda fn=None, *_, **__: fn if callable(fn) else (lambda f: f)
        sys.modules["gin"] = stub


class Stages:
    """Prints the elapsed time of each stage; remembers the current one for error reports."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.current = "setup"
        self.seconds: Dict[str, float] = {}
        self._t = self.start

    def begin(self, name: str) -> None:
        self.current = name
        self._t = time.perf_counter()
        print(f"[{PROG}] {name} ...", flush=True)

    def end(self) -> None:
        now = time.perf_counter()
        self.seconds[self.current] = now - self._t
        print(f"[{PROG}] {self.current}: {now - self._t:.1f} s (total {now - self.start:.1f} s)", flush=True)


def _devices(dry_run: bool) -> Tuple[Any, str, str]:
    """(JAX device, torch device string, human-readable device name); refuses without a GPU.

    JAX initialises CUDA before torch is imported: both load the pip CUDA libraries (cuDNN,
    cuBLAS), and JAX checks the versions it finds.
    """
    import jax

    if dry_run:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
        except OSError:
            pass
        return jax.devices("cpu")[0], "cpu", f"CPU ({cpu}, {os.cpu_count()} cores)"
    backend = jax.default_backend()
    if backend != "gpu":
        raise CheckError(f"JAX {jax.__version__} sees no GPU (default backend {backend!r}); install jax[cuda12] "
                         "on this machine or pass --dry_run")
    import torch

    if not torch.cuda.is_available():
        raise CheckError(f"PyTorch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda}); "
                         "install a CUDA build of torch or pass --dry_run")
    device = jax.devices()[0]
    return device, "cuda", torch.cuda.get_device_name(0)


def lookup_peak(names: List[str]) -> Optional[Tuple[str, float]]:
    """(table entry, bf16 dense TFLOP/s) of the first `PEAK_BF16_TFLOPS` pattern in any name."""
    for pattern, label, tflops in PEAK_BF16_TFLOPS:
        if any(re.search(pattern, name, re.IGNORECASE) for name in names):
            return label, tflops
    return None


def measure_matmul_flops(n: int, repeats: int = 10) -> float:
    """Best FLOP/s of a jitted bf16 n x n x n matmul (2 n^3 FLOPs per call)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def _sync_torch(torch_device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)


def time_interleaved(steps: Dict[str, Callable[[], Any]], warmup: int, timed: int) -> Dict[str, List[float]]:
    """Warm each step up, then time `timed` rounds of one call per step, in turn."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(timed):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _stats(ts: List[float]) -> Dict[str, float]:
    return {"best_s": min(ts), "median_s": statistics.median(ts), "all_s": list(ts)}


def model_config(args):
    from dsbs_jax.models.config import t5_1_1_config

    return t5_1_1_config(args.size, vocab_size=args.vocab_size, dropout_rate=0.0, dtype="bfloat16")


def train_stage(args, config, torch_device: str, stages: Stages) -> Dict[str, Any]:
    """Both train steps, timed interleaved; model FLOPs from XLA's cost analysis of ours."""
    import jax
    import torch

    from bench_model_vs_pytorch import make_torch_step
    from bench_train_step import make_our_step

    stages.begin("ours: build + compile train step")
    our_step, flops, six_n, compile_s = make_our_step(config, args)
    if not flops > 0:
        raise CheckError("XLA's cost_analysis() of the compiled train step reported no 'flops'; "
                         "MFU cannot be computed (pass --verbose and report the JAX version)")
    stages.end()
    print(f"  compile {compile_s:.1f} s; XLA FLOPs/step {flops / 1e9:.2f} GFLOP; 6*N*tokens {six_n / 1e9:.2f} GFLOP")
    stages.begin("HF PyTorch: build train step")
    torch_step = make_torch_step(config, args, device=torch_device, autocast_dtype=torch.bfloat16)
    sync = _sync_torch(torch_device)
    stages.end()

    def ours() -> None:
        our_step()
        jax.block_until_ready(our_step.holder["state"])

    def theirs() -> None:
        torch_step()
        sync()

    stages.begin(f"train: {args.warmup} warm-up + {args.steps} timed steps per side, interleaved")
    times = time_interleaved({"ours": ours, "hf": theirs}, args.warmup, args.steps)
    stages.end()
    memory = {}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        memory["ours_peak_gib"] = stats["peak_bytes_in_use"] / 2 ** 30
    if torch_device == "cuda":
        memory["hf_peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    del our_step, torch_step, ours, theirs
    gc.collect()
    if torch_device == "cuda":
        torch.cuda.empty_cache()
    return {"ours": _stats(times["ours"]), "hf": _stats(times["hf"]), "xla_flops": flops, "six_n_flops": six_n,
            "compile_s": compile_s, "memory": memory}


def _hf_decode_model(config, torch_device: str):
    """(HF model in bf16 on `torch_device`, our params with the same weights, our config)."""
    import numpy as np
    import torch
    import transformers

    from bench_model_vs_pytorch import hf_t5_config
    from dsbs_jax.models import hf_convert, network

    hf_config = hf_t5_config(config)
    torch.manual_seed(1)
    model = transformers.T5ForConditionalGeneration(hf_config).eval()
    with torch.no_grad():  # EOS (id 1) gets logit 0, never the argmax among 32k random logits
        model.shared.weight[1].zero_()
        model.lm_head.weight[1].zero_()
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    params = hf_convert.hf_to_t5x_params(state, model.config.to_dict(), source="HF T5 (random init)")
    ours = hf_convert.t5_config_from_hf(model.config.to_dict()).replace(dtype=config.dtype, dropout_rate=0.0)
    expected = network.unbox_params(network.abstract_params(ours))
    import jax

    got_shapes = jax.tree.map(lambda x: tuple(x.shape), params)
    want_shapes = jax.tree.map(lambda x: tuple(x.shape), expected)
    if got_shapes != want_shapes:
        raise CheckError("converted HF parameters do not match our network's parameter tree "
                         f"({len(jax.tree.leaves(got_shapes))} vs {len(jax.tree.leaves(want_shapes))} leaves)")
    del state
    return model.to(device=torch_device, dtype=torch.bfloat16), jax.device_put(params), ours


def decode_stage(args, config, torch_device: str, stages: Stages) -> Dict[str, Any]:
    """Greedy decoding of `args.decode_tokens` tokens at `args.batch`, ours vs HF `generate`."""
    import jax
    import numpy as np
    import torch

    from dsbs_jax.models import decoding

    stages.begin("decode: build both models (same random weights)")
    hf_model, params, dec_config = _hf_decode_model(config, torch_device)
    rng = np.random.default_rng(2)
    inputs = rng.integers(2, args.vocab_size, (args.batch, args.input_len), dtype=np.int32)
    jax_inputs = jax.device_put(inputs)
    torch_inputs = torch.tensor(inputs, dtype=torch.long, device=torch_device)
    mask = torch.ones_like(torch_inputs)
    n = args.decode_tokens
    sync = _sync_torch(torch_device)
    out: Dict[str, Any] = {}
    stages.end()

    def ours() -> None:
        # eos_id -1 never matches a token: every row decodes exactly n tokens, as HF's min_new_tokens.
        out["ours"] = decoding.generate(params, dec_config, jax_inputs, method="greedy", max_decode_length=n,
                                        eos_id=-1)
        out["ours"].block_until_ready()

    def theirs() -> None:
        with torch.no_grad():
            out["hf"] = hf_model.generate(input_ids=torch_inputs, attention_mask=mask, max_new_tokens=n,
                                          min_new_tokens=n, do_sample=False, num_beams=1, use_cache=True)
        sync()

    stages.begin("decode: ours compile (first call)")
    t0 = time.perf_counter()
    ours()
    compile_s = time.perf_counter() - t0
    stages.end()
    stages.begin(f"decode: 1 warm-up + {args.decode_repeats} timed calls per side, interleaved")
    times = time_interleaved({"ours": ours, "hf": theirs}, 1, args.decode_repeats)
    stages.end()
    ours_tokens = np.asarray(out["ours"])
    hf_tokens = out["hf"].cpu().numpy()[:, 1:]  # drop the decoder start token
    if hf_tokens.shape != ours_tokens.shape:
        raise CheckError(f"HF generate returned {hf_tokens.shape[1]} new tokens per row, ours {ours_tokens.shape[1]}; "
                         "expected --decode_tokens for both")
    same = hf_tokens == ours_tokens
    del hf_model, params
    gc.collect()
    return {"ours": _stats(times["ours"]), "hf": _stats(times["hf"]), "compile_s": compile_s,
            "new_tokens": n, "agreement": float(same.mean()), "rows_identical": float(same.all(axis=1).mean())}


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
    """The markdown report of one run."""
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
        f"- decode: greedy, batch {a['batch']}, {a['input_len']} input tokens, {dec['new_tokens']} new tokens per row; "
        f"{a['decode_repeats']} timed calls per side; HF bf16 weights, KV cache on",
        f"- bf16 peak used for MFU: {peak['tflops']:.1f} TFLOP/s ({peak['source']})",
        f"- elapsed: {result['elapsed_s']:.0f} s in all; per stage: "
        + "; ".join(f"{k} {v:.1f} s" for k, v in result["stages"].items()),
        "",
        "| metric | ours (JAX) | HF PyTorch | ours vs HF | target | met |",
        "|---|---|---|---|---|---|",
    ]
    t_ours, t_hf = tr["ours"], tr["hf"]
    lines.append(f"| train step, best (s) | {t_ours['best_s']:.4f} | {t_hf['best_s']:.4f} | "
                 f"{tr['speedup_best']:.2f}x | | |")
    lines.append(f"| train step, median (s) | {t_ours['median_s']:.4f} | {t_hf['median_s']:.4f} | "
                 f"{tr['speedup_median']:.2f}x | >= {TARGET_SPEEDUP}x | {_met(tr['speedup_median'] >= TARGET_SPEEDUP)} |")
    lines.append(f"| train tokens/s, median step | {tr['tokens_per_s_ours']:.0f} | {tr['tokens_per_s_hf']:.0f} | | | |")
    lines.append(f"| model FLOPs/step, XLA cost analysis (GFLOP) | {tr['xla_flops'] / 1e9:.6g} | same | | | |")
    lines.append(f"| 6·N·tokens/step (GFLOP) | {tr['six_n_flops'] / 1e9:.6g} | same | | | |")
    lines.append(f"| MFU, XLA FLOPs / median step / peak | {tr['mfu_ours'] * 100:.2f} % | {tr['mfu_hf'] * 100:.2f} % | | "
                 f">= {TARGET_MFU * 100:.0f} % | {_met(tr['mfu_ours'] >= TARGET_MFU)} |")
    lines.append(f"| MFU, 6·N·tokens / median step / peak | {tr['mfu6n_ours'] * 100:.2f} % | "
                 f"{tr['mfu6n_hf'] * 100:.2f} % | | | |")
    lines.append(f"| bf16 peak used for MFU (TFLOP/s) | {peak['tflops']:.4g} | same | | {peak['source']} | |")
    lines.append(f"| measured bf16 matmul {a['matmul_n']}³ (TFLOP/s) | {peak['measured_tflops']:.4g} | | | "
                 f"sanity check of the peak | |")
    lines.append(f"| decode tokens/s, best call | {dec['tokens_per_s_ours']:.1f} | {dec['tokens_per_s_hf']:.1f} | "
                 f"{dec['speedup_best']:.2f}x | | |")
    lines.append(f"| decode call, median (s) | {dec['ours']['median_s']:.4f} | {dec['hf']['median_s']:.4f} | "
                 f"{dec['speedup_median']:.2f}x | | |")
    lines.append(f"| decode tokens equal to HF's, fraction of tokens / of whole rows | "
                 f"{dec['agreement']:.4f} / {dec['rows_identical']:.4f} | | | reported, not a target | |")
    lines.append(f"| compile (s): train step / decode | {tr['compile_s']:.1f} / {dec['compile_s']:.1f} | | | | |")
    memory = tr.get("memory") or {}
    if memory:
        lines.append(f"| peak device memory (GiB) | {_fmt(memory.get('ours_peak_gib'), '.1f')} | "
                     f"{_fmt(memory.get('hf_peak_gib'), '.1f')} | | | |")
    if result["mode"].startswith("CPU"):
        lines += ["", "CPU tiny dry run: the numbers only show that the code paths run; they are not a measurement."]
    return "\n".join(lines) + "\n"


def summarize(args, device_name: str, jax_device, stages: Stages, tr: Dict[str, Any], dec: Dict[str, Any],
              measured: float) -> Dict[str, Any]:
    """All derived numbers (ratios, MFU, tokens/s) of one run."""
    names = [device_name, getattr(jax_device, "device_kind", "")]
    if args.peak_tflops:
        peak = {"tflops": args.peak_tflops, "source": "--peak_tflops"}
    elif not args.dry_run and (entry := lookup_peak(names)):
        peak = {"tflops": entry[1], "source": f"datasheet table: {entry[0]}"}
    else:
        why = "CPU dry run" if args.dry_run else "device not in the table; pass --peak_tflops"
        peak = {"tflops": measured / 1e12, "source": f"measured bf16 matmul ({why})"}
    peak["measured_tflops"] = measured / 1e12
    peak_flops = peak["tflops"] * 1e12
    tokens = args.batch * (args.input_len + args.target_len)
    for side in ("ours", "hf"):
        med = tr[side]["median_s"]
        tr[f"mfu_{side}"] = tr["xla_flops"] / med / peak_flops
        tr[f"mfu6n_{side}"] = tr["six_n_flops"] / med / peak_flops
        tr[f"tokens_per_s_{side}"] = tokens / med
    tr["speedup_median"] = tr["hf"]["median_s"] / tr["ours"]["median_s"]
    tr["speedup_best"] = tr["hf"]["best_s"] / tr["ours"]["best_s"]
    new = args.batch * dec["new_tokens"]
    dec["tokens_per_s_ours"] = new / dec["ours"]["best_s"]
    dec["tokens_per_s_hf"] = new / dec["hf"]["best_s"]
    dec["speedup_best"] = dec["hf"]["best_s"] / dec["ours"]["best_s"]
    dec["speedup_median"] = dec["hf"]["median_s"] / dec["ours"]["median_s"]
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
        "met": {"mfu": tr["mfu_ours"] >= TARGET_MFU, "speedup": tr["speedup_median"] >= TARGET_SPEEDUP},
        "stages": dict(stages.seconds),
        "elapsed_s": time.perf_counter() - stages.start,
    }


def _write(path: str, text: str) -> None:
    """Atomic: a failed run leaves an earlier report untouched."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run(args: argparse.Namespace, stages: Stages) -> Dict[str, Any]:
    stages.begin("import JAX + PyTorch, find the device")
    jax_device, torch_device, device_name = _devices(args.dry_run)  # JAX initialises CUDA first
    stages.end()
    print(f"  device: {device_name}; JAX {jax_device}")
    config = model_config(args)
    stages.begin(f"bf16 matmul rate ({args.matmul_n}^3)")
    measured = measure_matmul_flops(args.matmul_n)
    stages.end()
    print(f"  {measured / 1e12:.2f} TFLOP/s")
    tr = train_stage(args, config, torch_device, stages)
    print(f"  train median: ours {tr['ours']['median_s']:.4f} s, HF {tr['hf']['median_s']:.4f} s")
    dec = decode_stage(args, config, torch_device, stages)
    print(f"  decode best: ours {dec['ours']['best_s']:.4f} s, HF {dec['hf']['best_s']:.4f} s; "
          f"token agreement {dec['agreement']:.4f}")
    return summarize(args, device_name, jax_device, stages, tr, dec, measured)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    _prepare_environment(args.dry_run)
    stages = Stages()
    try:
        result = run(args, stages)
    except CheckError as error:
        return flags.report_error(PROG, error, verbose=args.verbose, code=2)
    except Exception as error:  # noqa: BLE001 - one line naming the stage, traceback under --verbose
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(error).split())
        message = message if len(message) <= 400 else message[:400] + " ..."
        hint = "; out of memory? try a smaller --batch" if "memory" in message.lower() else ""
        return flags.report_error(PROG, RuntimeError(
            f"{stages.current}: {type(error).__name__}: {message}{hint} (--verbose for the traceback)"), code=1)
    text = render(result)
    _write(args.json, json.dumps(result, indent=2, sort_keys=True) + "\n")
    _write(args.out, text)
    print()
    print(text, end="")
    print(f"\nwrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
