"""CPU training-step throughput: our Flax T5 (jax.jit) vs Hugging Face PyTorch T5, same dims.

    python benchmarks/bench_model_vs_pytorch.py                    # REFERENCE.md CPU anchor dims
    python benchmarks/bench_model_vs_pytorch.py --size tiny --steps 5   # smoke run, seconds

One step = forward + backward + optimizer update on a fixed batch, in float32 and in bfloat16
compute (float32 parameters; PyTorch under `torch.autocast`), with the same
optimizer family on both sides: Adafactor (factored second moments, decay 0.8, update
clipping 1.0, parameter-scale-relative updates, no momentum, lr 1e-3) as `optax.adafactor`
vs `transformers.optimization.Adafactor`. Loss: mean token cross-entropy over the targets.
Both sides are warmed up (JAX compile excluded), then timed *interleaved* (one JAX step, one
torch step, ...) so load changes on a shared machine hit both equally; the median is
reported. Tokens/s counts batch * (input_len + target_len) per step.
Default dims are REFERENCE.md's CPU anchor: vocab 32128, d_model 512, 6 heads x 64, 8+8
layers, d_ff 1024 gated-GELU, batch 8, 128 input / 32 target tokens.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", help="t5_1_1_config size: tiny, small, base, ...")
    p.add_argument("--vocab_size", type=int, default=32128)
    p.add_argument("--num_layers", type=int, default=None, help="override encoder and decoder depth")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--input_len", type=int, default=128)
    p.add_argument("--target_len", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per framework (after compile)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--only", choices=("both", "jax", "torch"), default="both")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="compute dtypes, comma-separated, all timed in one interleaved loop: bfloat16 = our "
                        "T5Config.dtype (float32 params, softmax, logits and loss) against PyTorch's "
                        "torch.autocast('cpu', bfloat16) (float32 params)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time forward+backward without the optimizer update on both sides")
    p.add_argument("--profile_dir", default=None, help="write a jax.profiler trace of 2 JAX steps here")
    args = p.parse_args()
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in args.dtypes if d not in ("float32", "bfloat16")]
    if bad or not args.dtypes:
        p.error(f"--dtypes {','.join(bad) or '(empty)'}: expected float32 and/or bfloat16, comma-separated")
    return args


def _config(args, dtype: str = "float32"):
    from dsbs_jax.models.config import t5_1_1_config

    overrides = {"vocab_size": args.vocab_size, "dropout_rate": 0.0, "dtype": dtype}
    if args.num_layers:
        overrides.update(num_encoder_layers=args.num_layers, num_decoder_layers=args.num_layers)
    return t5_1_1_config(args.size, **overrides)


def _batch(args, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    inputs = rng.integers(2, args.vocab_size, (args.batch, args.input_len), dtype=np.int32)
    targets = rng.integers(2, args.vocab_size, (args.batch, args.target_len), dtype=np.int32)
    decoder_inputs = np.concatenate([np.zeros((args.batch, 1), np.int32), targets[:, :-1]], axis=1)
    return inputs, targets, decoder_inputs


def make_jax_step(config, args, update_params: bool = True):
    """Returns (step(), compile_seconds): one jitted Adafactor update on a fixed batch.

    With `update_params=False` the step stops at the gradients (forward + backward only).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from dsbs_jax.models import network

    model = network.Transformer(config)
    params = network.unbox_params(network.init_params(config, jax.random.PRNGKey(0)))
    tx = optax.adafactor(learning_rate=1e-3)
    opt_state = tx.init(params)
    inputs, targets, decoder_inputs = (jnp.asarray(x) for x in _batch(args))

    def loss_fn(p):
        logits = model.apply({"params": p}, inputs, decoder_inputs, targets, enable_dropout=False)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
        weights = (targets > 0).astype(jnp.float32)
        return jnp.sum(nll * weights) / jnp.sum(weights)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    @jax.jit
    def gradients(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        return grads, loss

    if not update_params:
        state = {"p": params, "s": opt_state}
        t0 = time.perf_counter()
        compiled_grad = gradients.lower(params, opt_state).compile()
        compile_s = time.perf_counter() - t0

        def grad_step():
            grads, loss = compiled_grad(state["p"], state["s"])
            jax.block_until_ready(grads)
            return float(loss)

        return grad_step, compile_s

    state = {"p": params, "s": opt_state}
    t0 = time.perf_counter()
    compiled = update.lower(state["p"], state["s"]).compile()
    compile_s = time.perf_counter() - t0

    def step():
        state["p"], state["s"], loss = compiled(state["p"], state["s"])
        return float(loss)  # blocks until the step is done

    return step, compile_s


def hf_t5_config(config):
    """The `transformers.T5Config` with our config's dims (T5 1.1: gated-GELU, no dropout).

    It asks for an untied head; transformers >= 5 ties `lm_head` to `shared` anyway (with
    `scale_decoder_outputs=False`, so the outputs equal an untied head initialised to shared.T).
    """
    import transformers

    return transformers.T5Config(
        vocab_size=config.vocab_size, d_model=config.emb_dim, d_kv=config.head_dim, d_ff=config.mlp_dim,
        num_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.0, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)


def make_torch_step(config, args, update_params: bool = True, device: str = "cpu", autocast_dtype=None):
    """Returns step(): one HF T5 forward/backward/Adafactor update on a fixed batch
    (`update_params=False`: forward + backward only).

    `device` ("cpu", "cuda") holds the fp32 parameters and the batch; with `autocast_dtype`
    (e.g. torch.bfloat16) the forward pass runs under `torch.autocast` (backward follows it).
    """
    import contextlib

    import torch
    import transformers
    from transformers.optimization import Adafactor

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(hf_t5_config(config)).to(device).train()
    opt = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False,
                    warmup_init=False, clip_threshold=1.0, decay_rate=-0.8, beta1=None)
    inputs, targets, decoder_inputs = (torch.tensor(x, dtype=torch.long, device=device) for x in _batch(args))
    device_type = torch.device(device).type

    def forward_context():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=autocast_dtype)

    def step():
        opt.zero_grad(set_to_none=True)
        with forward_context():
            out = model(input_ids=inputs, decoder_input_ids=decoder_inputs, labels=targets)
        out.loss.backward()
        if update_params:
            opt.step()
        return float(out.loss.detach())  # .item() waits for the device

    return step


def matmul_flops(m: int, k: int, n: int, dtype: str = "float32", repeats: int = 10, min_gflop: float = 0.0) -> float:
    """Best FLOP/s of a jitted `[m, k] x [k, n]` matmul in `dtype` (2·m·k·n FLOPs each), on JAX's default device.

    A call runs the matmul back to back (different rows each time, so none is hoisted) until it does
    `min_gflop` of work, so that a small shape's rate is not its dispatch overhead; the `[m, n]`
    accumulation is < 1/k of the work. The benchmarks' matmul peak (train-step MFU, decoding's limit,
    the GPU check's sanity check of the datasheet peak).
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    flops = 2.0 * m * k * n
    inner = max(1, int(min_gflop * 1e9 // flops))
    a = jax.random.normal(jax.random.PRNGKey(0), (inner, m, k), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (k, n), dtype)

    @jax.jit
    def run(a, b):
        def body(i, acc):
            return acc + lax.dynamic_index_in_dim(a, i, keepdims=False) @ b
        return lax.fori_loop(0, inner, body, jnp.zeros((m, n), dtype))

    run(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return inner * flops / best


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    args = _args()
    tokens = args.batch * (args.input_len + args.target_len)
    print(f"config: {_config(args)}")
    print(f"batch {args.batch} x ({args.input_len} in + {args.target_len} out) = {tokens} tokens/step; "
          f"dtypes {args.dtypes}; cpus={os.cpu_count()} torch_threads={args.threads} host={platform.node()} "
          f"load(1/5/15m) before: {_loadavg()}")
    steps = {}
    for dtype in args.dtypes:
        config = _config(args, dtype)
        autocast = None
        if dtype == "bfloat16":
            import torch

            autocast = torch.bfloat16
        if args.only in ("both", "jax"):
            steps[f"jax_{dtype}"], compile_s = make_jax_step(config, args)
            print(f"jax {dtype} compile: {compile_s:.1f}s")
        if args.only in ("both", "torch"):
            steps[f"torch_{dtype}"] = make_torch_step(config, args, autocast_dtype=autocast)
        if args.breakdown:
            if args.only in ("both", "jax"):
                steps[f"jax_fwd_bwd_{dtype}"], _ = make_jax_step(config, args, update_params=False)
            if args.only in ("both", "torch"):
                steps[f"torch_fwd_bwd_{dtype}"] = make_torch_step(config, args, update_params=False,
                                                                  autocast_dtype=autocast)
    losses = {}
    for name, step in steps.items():
        for _ in range(args.warmup):
            losses[name] = step()
    times = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    from tqdm import tqdm

    for _ in tqdm(range(args.steps), desc="timed steps (interleaved)"):
        for name, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            losses[name] = step()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    print(f"load(1/5/15m) after: {_loadavg()}  date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    result = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        result[name] = (tokens / med, tokens / min(ts))
        # Process CPU seconds per step (all threads): work done, less sensitive to waiting for
        # cores on a shared machine, though it counts OpenMP spin-waiting too.
        print(f"{name:13s}: median {med:.3f}s/step (min {min(ts):.3f}, max {max(ts):.3f}; "
              f"cpu {statistics.median(cpu[name]):.2f}s/step) = {tokens / med:.0f} tokens/s "
              f"(best step {tokens / min(ts):.0f}); last loss {losses[name]:.3f}")
    pairs = [(f"{kind}_{d}".replace("torch", "jax", 1), f"{kind}_{d}") for d in args.dtypes
             for kind in ("torch", "torch_fwd_bwd")]
    for ours, theirs in pairs:
        if ours in result and theirs in result:
            print(f"ratio {ours}/{theirs} (tokens/s): median {result[ours][0] / result[theirs][0]:.2f}, "
                  f"best-step {result[ours][1] / result[theirs][1]:.2f}")
    profiled = f"jax_{args.dtypes[0]}"
    if args.profile_dir and profiled in steps:
        import jax

        with jax.profiler.trace(args.profile_dir):
            steps[profiled]()
            steps[profiled]()
        print(f"jax profile written to {args.profile_dir}")


if __name__ == "__main__":
    main()
