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
   for comparison. The peak is `--peak_tflops`, else `gpu_check_report.PEAK_BF16_TFLOPS`
   (NVIDIA datasheet dense numbers) by device name, else (a device not in the table, or the
   dry run) the measured rate of a jitted bf16 `--matmul_n`^3 matmul, which is always reported
   as a sanity column.
3. **Decoding** at batch 64: `decoding.generate` (greedy, KV cache) against HF `generate`
   (greedy, `use_cache=True`, `min_new_tokens = max_new_tokens`), both producing exactly
   `--decode_tokens` tokens per row. Both sides hold the same random weights (HF's, converted
   with `hf_convert.hf_to_t5x_params`). HF runs with bf16 weights (`model.to(bfloat16)`, as one
   serves with PyTorch, rather than re-casting fp32 weights under autocast at every step); ours
   keeps fp32 parameters and computes in bf16, i.e. multiplies by the same rounded weights.
   The EOS row of the output embedding is zeroed so that EOS is never the argmax and
   `min_new_tokens` changes nothing; ours runs with an EOS id that never occurs. The token
   agreement fraction is reported, not enforced (bf16 rounding may flip near-ties).
4. A markdown table (`--out`) and the same numbers as JSON (`--json`), with the issue-15 targets
   (MFU >= 45 %, >= 1.3x PyTorch eager).

A stage that fails (say, out of memory at batch 64) becomes one table row naming the error; the
other stages still run, the table is written and the exit status is 1. No GPU: one line, exit 2.
JAX does not preallocate GPU memory here (`XLA_PYTHON_CLIENT_PREALLOCATE=false`) so that
PyTorch, in the same process, gets its share.

`--dry_run` runs the same code on CPU at tiny dims (tiny config, batch 2, 16/8 tokens, 1 warm-up
and 1 timed step, 4 new tokens): a smoke test of the code paths, not a measurement.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import platform
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

import gpu_check_report as report  # noqa: E402
from dsbs_jax import flags  # noqa: E402  (stdlib only)

PROG = "gpu_check"
# Flags whose default depends on --dry_run: (real run, dry run).
_SIZED_DEFAULTS = {
    "size": ("base", "tiny"),
    "batch": (64, 2),
    "input_len": (512, 16),
    "target_len": (128, 8),
    "warmup": (3, 1),
    "steps": (30, 1),
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
    p.add_argument("--steps", type=pos, default=None, help="timed train steps per side (30)")
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
        import gin  # noqa: F401  (only to see whether it is installed)
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
    if backend not in ("gpu", "cuda"):  # JAX names its CUDA platform "gpu"
        raise CheckError(f"JAX {jax.__version__} sees no GPU (default backend {backend!r}); install jax[cuda12] "
                         "on this machine or pass --dry_run")
    import torch

    if not torch.cuda.is_available():
        raise CheckError(f"PyTorch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda}); "
                         "install a CUDA build of torch or pass --dry_run")
    device = jax.devices()[0]
    return device, "cuda", torch.cuda.get_device_name(0)


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
    stages.end()
    if not flops > 0:  # keep going: the step times are still worth having
        print("  WARNING: XLA's cost_analysis() of the compiled step reported no 'flops'; MFU uses 6*N*tokens")
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
    return {"ours": _stats(times["ours"]), "hf": _stats(times["hf"]), "xla_flops": flops, "six_n_flops": six_n,
            "compile_s": compile_s, "memory": memory}


def _hf_decode_model(config, torch_device: str):
    """(HF model in bf16 on `torch_device`, our params with the same weights, our config)."""
    import jax
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
    got_shapes = jax.tree.map(lambda x: tuple(x.shape), params)
    want_shapes = jax.tree.map(lambda x: tuple(x.shape), expected)
    if got_shapes != want_shapes:
        raise CheckError("converted HF parameters do not match our network's parameter tree "
                         f"({len(jax.tree.leaves(got_shapes))} vs {len(jax.tree.leaves(want_shapes))} leaves)")
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
    return {"ours": _stats(times["ours"]), "hf": _stats(times["hf"]), "compile_s": compile_s,
            "new_tokens": n, "agreement": float(same.mean()), "rows_identical": float(same.all(axis=1).mean())}


def _write(path: str, text: str) -> None:
    """Atomic: a failed run leaves an earlier report untouched."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    message = message if len(message) <= 300 else message[:300] + " ..."
    hint = "; out of memory? try a smaller --batch" if "memory" in message.lower() else ""
    return f"{type(error).__name__}: {message}{hint}"


def _attempt(name: str, fn: Callable[[], Dict[str, Any]], stages: Stages, verbose: bool) -> Dict[str, Any]:
    """fn()'s result, or {"error": one line} so that one failed stage does not lose the others."""
    result: Dict[str, Any]
    try:
        result = fn()
    except Exception as error:  # noqa: BLE001 - reported in the table and on stderr
        if verbose:
            traceback.print_exc()
        line = f"{stages.current}: {_one_line(error)}"
        print(f"[{PROG}] {name} FAILED: {line}", flush=True)
        result = {"error": line}
    # The stage's models (and, outside the except block, a traceback's frames) are garbage now:
    # free their device memory before the next stage.
    gc.collect()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        sys.modules["torch"].cuda.empty_cache()
    return result


def run(args: argparse.Namespace, stages: Stages) -> Dict[str, Any]:
    stages.begin("import JAX + PyTorch, find the device")
    jax_device, torch_device, device_name = _devices(args.dry_run)  # JAX initialises CUDA first
    stages.end()
    print(f"  device: {device_name}; JAX {jax_device}")
    config = model_config(args)

    def matmul() -> Dict[str, Any]:
        stages.begin(f"bf16 matmul rate ({args.matmul_n}^3)")
        from bench_model_vs_pytorch import matmul_flops

        rate = matmul_flops(args.matmul_n, args.matmul_n, args.matmul_n, "bfloat16")
        stages.end()
        print(f"  {rate / 1e12:.2f} TFLOP/s")
        return {"measured_tflops": rate / 1e12}

    measured = _attempt("matmul", matmul, stages, args.verbose)
    measured = {"measured_tflops": None, "measured_error": measured["error"]} if "error" in measured else measured
    tr = _attempt("train", lambda: train_stage(args, config, torch_device, stages), stages, args.verbose)
    if "error" not in tr:
        print(f"  train median: ours {tr['ours']['median_s']:.4f} s, HF {tr['hf']['median_s']:.4f} s")
    dec = _attempt("decode", lambda: decode_stage(args, config, torch_device, stages), stages, args.verbose)
    if "error" not in dec:
        print(f"  decode best: ours {dec['ours']['best_s']:.4f} s, HF {dec['hf']['best_s']:.4f} s; "
              f"token agreement {dec['agreement']:.4f}")
    return report.summarize(args, device_name, jax_device, stages.seconds, time.perf_counter() - stages.start,
                            tr, dec, measured)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    _prepare_environment(args.dry_run)
    stages = Stages()
    try:
        result = run(args, stages)
        text = report.render(result)
    except CheckError as error:
        return flags.report_error(PROG, error, verbose=args.verbose, code=2)
    except Exception as error:  # noqa: BLE001 - one line naming the stage, traceback under --verbose
        if args.verbose:
            traceback.print_exc()
        return flags.report_error(PROG, RuntimeError(f"{stages.current}: {_one_line(error)} "
                                                     "(--verbose for the traceback)"), code=1)
    _write(args.json, json.dumps(result, indent=2, sort_keys=True) + "\n")
    _write(args.out, text)
    print()
    print(text, end="")
    print(f"\nwrote {args.out} and {args.json}")
    if result["errors"]:
        failed = "; ".join(f"{k} failed: {v}" for k, v in result["errors"].items())
        return flags.report_error(PROG, RuntimeError(f"{failed} (the table at {args.out} has the other rows; "
                                                     "--verbose for the traceback)"), code=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
