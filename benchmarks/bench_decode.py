"""Greedy decoding on CPU: our `decoding.generate` vs Hugging Face `generate`, and `dsbs predict` end to end.

    python benchmarks/bench_decode.py                                  # anchor dims, batch 1, 8, 64
    python benchmarks/bench_decode.py --predict                        # + `dsbs predict` end to end
    python benchmarks/bench_decode.py --size tiny --vocab_size 128 --batches 1,2 --reps 1 --new_tokens 4

**Decoding.** Same random weights on both sides: ours are `network.init_params`, written to a
Hugging Face directory with the repo's exporter (`models/export.export_hf`) and loaded by
`T5ForConditionalGeneration.from_pretrained`. HF runs greedy `generate` with the KV cache,
`min_new_tokens = max_new_tokens = new_tokens` (EOS masked until the last step), ours
`decoding.generate(method="greedy", eos_id=-1)` (no id equals -1, so the while loop runs all
`new_tokens` steps). The EOS column of the output head is zeroed in the shared weights, so the
EOS logit is 0 on both sides and never the argmax of 32k random logits: HF's masking then changes
nothing and both decode the same 64 tokens, which the run checks (`identical`). Calls are timed
interleaved (ours, HF, ours, HF, ...) after one warm-up call each (compile excluded); min and
median seconds per `generate` call of the whole batch (encoder + all steps).

**Fraction of the machine's limit**, measured in the same run:
* batch 1 (memory-bound): bytes the decode must read, over the call time, against the best of
  a > 1 GB numpy copy (read + write counted), a numpy sum and a jitted `jnp.sum` (read only).
  Counted per generated token: every decoder kernel used per step (self-attention q/k/v/o,
  cross-attention q/o, gated MLP wi_0/wi_1/wo, layer norms), the `logits_dense` kernel, one
  embedding row, and the KV cache read by attention (ours reads the whole `[max_len]` self-
  attention cache every step, masked, and the `[input_len]` cross-attention keys/values); plus,
  once per call, the encoder kernels and the cross-attention k/v kernels. Activations not counted.
* batch 64 (compute-bound): model FLOPs (2 per multiply-add) of encoder (once) + cross-attention
  k/v projection (once) + per new token the decoder matmuls, attention over the cache (the
  positions written so far) and the cross-attention keys, and the logits matmul; against the
  best rate of a jitted 2048^3 fp32 matmul, and separately the shape class decoding runs
  (`[batch, d_model] x [d_model, d_ff]` and the logits `[batch, d_model] x [d_model, vocab]`).

**`dsbs predict` end to end** (`--predict`): a real run directory as `dsbs train` leaves it
(orbax `checkpoints/{step}/state` written by `train.checkpointing.Checkpointer`, `dsbs_run.json`,
a SentencePiece model trained here on the release's CQA text), `--predict_records` JSONL inputs
from the CQA test split. Timed: `predict.main` in-process (read JSONL, restore, tokenize, decode,
detokenize, write JSONL), cold (with compiles) and warm; the checkpoint restore alone; the CLI
once as a subprocess (start-up = its wall time - the cold in-process time); and the raw
`decoding.generate` rate on the same token ids, batch size and decode length (batches in file
order, each padded to the longest input of the file), and again padded to the run's full input
length (what `dsbs predict` decoded before it bucketed lengths; the tokens must agree).

Torch uses `--threads` intra-op threads (default: all cores); XLA its default CPU thread pool.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model_vs_pytorch import _config, _loadavg, matmul_flops  # noqa: E402  (the anchor dims and load line of every benchmark)


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", help="t5_1_1_config size: tiny, small, base, ...")
    p.add_argument("--vocab_size", type=int, default=32128)
    p.add_argument("--num_layers", type=int, default=None, help="override encoder and decoder depth")
    p.add_argument("--batches", default="1,8,64", help="comma-separated batch sizes")
    p.add_argument("--input_len", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3, help="timed calls per side and batch")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--skip_hf", action="store_true", help="ours only (no identical-tokens check)")
    p.add_argument("--skip_limits", action="store_true", help="no bandwidth / matmul-peak measurement")
    p.add_argument("--bandwidth_mb", type=int, default=1536, help="array size of the bandwidth test")
    p.add_argument("--matmul_size", type=int, default=2048, help="n of the n^3 peak-matmul test")
    p.add_argument("--matmul_gflop", type=float, default=20.0, help="work per timed call of the matmul tests")
    p.add_argument("--skip_decode", action="store_true", help="only the --predict part")
    p.add_argument("--predict", action="store_true", help="also measure `dsbs predict` end to end")
    p.add_argument("--predict_records", type=int, default=256)
    p.add_argument("--predict_batch", type=int, default=32)
    p.add_argument("--predict_input_length", type=int, default=512,
                   help="the run's task_feature_lengths['inputs'] (dsbs train's default 512)")
    p.add_argument("--spm_vocab", type=int, default=2000, help="pieces of the SentencePiece model trained here")
    p.add_argument("--skip_cli", action="store_true", help="no `dsbs predict` subprocess")
    p.add_argument("--release_dir", default=os.environ.get(
        "DSBS_RELEASE_DIR", str(REPO.parent / "shared" / "data" / "dsbs_release")))
    p.add_argument("--json_out", default=None, help="also write all numbers as JSON here")
    return p.parse_args(argv)


def _now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def _best(fn: Callable[[], Any], reps: int) -> float:
    """Min wall seconds of `fn()` over `reps` calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ----------------------------------------------------------------------------------------
# The machine's limits
# ----------------------------------------------------------------------------------------
def measure_bandwidth(mb: int, reps: int = 5) -> Dict[str, float]:
    """GB/s of three streaming kernels over a `mb` MB float32 array (best of `reps`)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    n = mb * (1 << 20) // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    nbytes = src.nbytes
    out = {"numpy copy (read+write)": 2 * nbytes / _best(lambda: np.copyto(dst, src), reps),
           "numpy sum (read)": nbytes / _best(src.sum, reps)}
    on_device = jnp.asarray(src)
    src = dst = None  # free the host copies before the next test
    total = jax.jit(jnp.sum)
    out["jax jnp.sum (read)"] = nbytes / _best(lambda: total(on_device).block_until_ready(), reps)
    return {k: v / 1e9 for k, v in out.items()}


def measure_matmul(shapes: List[tuple], gflop: float, reps: int = 5) -> Dict[str, float]:
    """GFLOP/s of jitted fp32 matmuls [m,k] x [k,n], each call doing at least `gflop` of work."""
    return {f"[{m},{k}]x[{k},{n}]": matmul_flops(m, k, n, repeats=reps, min_gflop=gflop) / 1e9 for m, k, n in shapes}


# ----------------------------------------------------------------------------------------
# What decoding has to do
# ----------------------------------------------------------------------------------------
def decode_costs(config, batch: int, input_len: int, new_tokens: int) -> Dict[str, float]:
    """Model FLOPs and bytes read of one `generate` call (see the module docstring)."""
    d, inner, ff, vocab = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim, config.vocab_size
    n_mlp_in = len(config.mlp_activations)
    enc_layers, dec_layers = config.num_encoder_layers, config.num_decoder_layers
    enc_layer_params = 4 * d * inner + (n_mlp_in + 1) * d * ff
    dec_step_params = 4 * d * inner + 2 * d * inner + (n_mlp_in + 1) * d * ff  # self qkvo, cross q o, mlp
    cross_kv_params = 2 * d * inner
    logits_params = d * vocab
    # FLOPs.
    enc = batch * input_len * enc_layers * 2 * (enc_layer_params + 2 * input_len * inner)
    cross_kv = batch * input_len * dec_layers * 2 * cross_kv_params
    attended = sum(t + 1 for t in range(new_tokens))  # self-attention keys written so far, summed over steps
    dec = batch * dec_layers * 2 * (new_tokens * dec_step_params + 2 * inner * (attended + new_tokens * input_len))
    logits = batch * new_tokens * 2 * logits_params
    flops = enc + cross_kv + dec + logits
    # Bytes (float32) read at batch 1, per generated token and once per call.
    per_token = 4 * (dec_layers * (dec_step_params + 3 * d)  # kernels + 3 layer-norm scales
                     + logits_params + d + d                  # logits kernel, embedding row, final norm
                     + dec_layers * 2 * inner * (new_tokens + input_len) * batch)  # self (max_len) + cross k/v
    once = 4 * (enc_layers * (enc_layer_params + 2 * d) + dec_layers * cross_kv_params)
    return {"flops": float(flops), "flops_encoder": float(enc + cross_kv), "flops_decoder": float(dec),
            "flops_logits": float(logits), "bytes_per_token": float(per_token), "bytes_once": float(once),
            "bytes_total": float(once + new_tokens * per_token)}


# ----------------------------------------------------------------------------------------
# The two decoders
# ----------------------------------------------------------------------------------------
def make_params(config):
    """Our random params (plain numpy tree) with the EOS column of the output head zeroed."""
    import jax
    import numpy as np

    from dsbs_jax.models import network

    params = jax.tree.map(np.array, network.unbox_params(network.init_params(config, jax.random.PRNGKey(0))))
    if "logits_dense" in params["decoder"]:
        params["decoder"]["logits_dense"]["kernel"][:, 1] = 0.0  # EOS logit 0: never the argmax
    return params


def make_ours(params, config, new_tokens: int) -> Callable:
    import jax

    from dsbs_jax.models import decoding

    device_params = jax.device_put(params)

    def run(tokens):
        return decoding.generate(device_params, config, tokens, method="greedy", max_decode_length=new_tokens,
                                 eos_id=-1).block_until_ready()

    return run


def make_hf(params, config, new_tokens: int, threads: int, workdir: str) -> Callable:
    import numpy as np
    import torch
    import transformers

    from dsbs_jax.models import export

    torch.set_num_threads(threads)
    directory = export.export_hf(params, config, os.path.join(workdir, "hf"))
    # (transformers 5 logs that it keeps the exported lm_head apart from the embedding: expected.)
    transformers.logging.set_verbosity_error()
    model = transformers.T5ForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).eval()

    def run(tokens):
        ids = torch.from_numpy(np.asarray(tokens, np.int64))
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=(ids > 0).long(), do_sample=False, num_beams=1,
                                 use_cache=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
        return out[:, 1:].numpy()  # drop the decoder start token

    return run


def bench_decoding(args, config, params, workdir: str) -> List[Dict[str, Any]]:
    import numpy as np

    ours = make_ours(params, config, args.new_tokens)
    hf = None if args.skip_hf else make_hf(params, config, args.new_tokens, args.threads, workdir)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        tokens = np.random.default_rng(batch).integers(2, config.vocab_size, (batch, args.input_len), dtype=np.int32)
        t0 = time.perf_counter()
        ours_tokens = np.asarray(ours(tokens))  # compile + first run
        compile_s = time.perf_counter() - t0
        sides = {"ours": ours} if hf is None else {"ours": ours, "hf": hf}
        row: Dict[str, Any] = {"batch": batch, "ours_first_call_s": compile_s, "load_before": _loadavg()}
        if hf is not None:
            hf_tokens = np.asarray(hf(tokens))
            same = hf_tokens.shape == ours_tokens.shape and bool(np.array_equal(hf_tokens, ours_tokens))
            row["identical"] = same
            row["tokens_matching"] = float(np.mean(hf_tokens == ours_tokens)) if hf_tokens.shape == ours_tokens.shape \
                else 0.0
        times: Dict[str, List[float]] = {name: [] for name in sides}
        for _ in range(args.reps):
            for name, fn in sides.items():
                t0 = time.perf_counter()
                fn(tokens)
                times[name].append(time.perf_counter() - t0)
        row["load_after"] = _loadavg()
        for name, ts in times.items():
            row[f"{name}_min_s"], row[f"{name}_median_s"] = min(ts), statistics.median(ts)
        row["ours_tokens_per_s"] = batch * args.new_tokens / row["ours_min_s"]
        if hf is not None:
            row["hf_over_ours_min"] = row["hf_min_s"] / row["ours_min_s"]
            row["hf_over_ours_median"] = row["hf_median_s"] / row["ours_median_s"]
        row.update(decode_costs(config, batch, args.input_len, args.new_tokens))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# ----------------------------------------------------------------------------------------
# dsbs predict end to end
# ----------------------------------------------------------------------------------------
def make_run_dir(config, params, root: pathlib.Path, args) -> tuple:
    """(run dir, records): a `dsbs train`-shaped MODEL_DIR of the dsbs method and CQA test inputs."""
    import dataclasses

    import jax
    import optax

    from dsbs_jax import methods
    from dsbs_jax.data.adapters.release import read_release
    from dsbs_jax.data.vocab import train_sentencepiece
    from dsbs_jax.train import checkpointing, train_state
    from dsbs_jax.train.inference import RUN_RECORD

    train = list(read_release(args.release_dir, "cqa", "train", limit=3000))
    test = list(read_release(args.release_dir, "cqa", "test", limit=args.predict_records))
    if len(test) < args.predict_records:  # more records than the split has: cycle through it
        test = [test[i % len(test)] for i in range(args.predict_records)]
    spm = train_sentencepiece([e.input + " " + (e.rationale or "") for e in train], str(root / "spm"),
                              vocab_size=args.spm_vocab)
    run = root / "run"
    state = train_state.create_train_state(jax.device_put(params), optax.adafactor(1e-3))
    ckpt = checkpointing.Checkpointer(str(run / "checkpoints"), async_save=False)
    ckpt.save(state.replace(step=jax.numpy.asarray(1, jax.numpy.int32)), {"batches": 1})
    ckpt.close()
    method = methods.get("dsbs")
    lengths = {"inputs": args.predict_input_length, "targets": args.new_tokens}
    record = {"model": dataclasses.asdict(config),
              "vocabulary": {"sentencepiece_model_file": spm, "extra_ids": 0},
              "method": method.name, "dataset": "cqa", "mixture_or_task_name": "cqa_dsbs_gold",
              "task_feature_lengths": lengths, "input_prefix": method.input_prefix,
              "postprocessor": method.postprocessor, "max_decode_length": args.new_tokens}
    (run / RUN_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    records = [{"input": e.input, "id": i} for i, e in enumerate(test)]
    return run, records


def bench_predict(args, config, params, workdir: str) -> Dict[str, Any]:
    import numpy as np

    from dsbs_jax.data.vocab import encode_text
    from dsbs_jax.models import decoding
    from dsbs_jax.train import inference, predict

    root = pathlib.Path(workdir)
    run, records = make_run_dir(config, params, root, args)
    src, dst = root / "in.jsonl", root / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["--checkpoint", str(run), "--input", str(src), "--output", str(dst),
            "--batch_size", str(args.predict_batch)]
    n = len(records)
    out: Dict[str, Any] = {"records": n, "batch_size": args.predict_batch, "max_input_length":
                           args.predict_input_length, "max_decode_length": args.new_tokens,
                           "load_before": _loadavg()}

    # The raw decoder on the same token ids: batches in file order, one padded shape.
    t0 = time.perf_counter()
    loaded, model_config, record = inference.load_for_inference(str(run))
    out["restore_s"] = time.perf_counter() - t0
    vocab = predict._vocabulary(record, None)
    ids = [encode_text(vocab, "predict: " + r["input"])[: args.predict_input_length - 1] + [1] for r in records]
    longest = max(len(x) for x in ids)
    out["input_tokens_mean"], out["input_tokens_max"] = float(np.mean([len(x) for x in ids])), longest
    batches = []
    for start in range(0, n, args.predict_batch):
        rows = np.zeros((args.predict_batch, longest), np.int32)
        for i, x in enumerate(ids[start:start + args.predict_batch]):
            rows[i, :len(x)] = x
        batches.append(rows)

    def raw(batches):
        return [np.asarray(decoding.generate(loaded, model_config, b, method="greedy",
                                             max_decode_length=args.new_tokens)) for b in batches]

    raw(batches[:1])  # compile
    t0 = time.perf_counter()
    raw_tokens = raw(batches)
    out["raw_generate_s"] = time.perf_counter() - t0
    # What `dsbs predict` did before length bucketing: every batch padded to the run's input length.
    full = [np.pad(b, ((0, 0), (0, args.predict_input_length - longest))) for b in batches]
    raw(full[:1])
    t0 = time.perf_counter()
    full_tokens = raw(full)
    out["raw_generate_full_length_s"] = time.perf_counter() - t0
    out["full_length_same_tokens"] = all(np.array_equal(a, b) for a, b in zip(raw_tokens, full_tokens))

    def in_process() -> float:
        t0 = time.perf_counter()
        if predict.main(argv) != 0:
            raise RuntimeError("dsbs predict failed")
        return time.perf_counter() - t0

    out["predict_cold_s"] = in_process()
    out["predict_warm_s"] = in_process()
    lines = dst.read_text().splitlines()
    written = [json.loads(line) for line in lines]
    out["predict_output_ok"] = (len(written) == n and [w["id"] for w in written] == list(range(n))
                                and all(isinstance(w.get("prediction"), str) for w in written))
    out["raw_examples_per_s"] = n / out["raw_generate_s"]
    out["predict_examples_per_s"] = n / out["predict_warm_s"]
    out["predict_over_raw"] = out["predict_examples_per_s"] / out["raw_examples_per_s"]
    out["predict_excl_restore_over_raw"] = out["raw_generate_s"] / max(out["predict_warm_s"] - out["restore_s"], 1e-9)
    if not args.skip_cli:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "dsbs_jax.cli", "predict", *argv], env=env,
                                capture_output=True, text=True)
        out["cli_s"] = time.perf_counter() - t0
        if result.returncode != 0:
            raise RuntimeError(f"dsbs predict CLI failed: {result.stderr[-2000:]}")
        out["cli_output_same"] = dst.read_text().splitlines() == lines
        out["cli_startup_s"] = out["cli_s"] - out["predict_cold_s"]
    out["load_after"] = _loadavg()
    print(json.dumps(out), flush=True)
    return out


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------
def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, float) and math.isfinite(x) else str(x)


def report(args, config, rows, limits, pred) -> str:
    lines = [f"date: {_now()}; host {platform.node()}, {os.cpu_count()} cpus, torch threads {args.threads}",
             f"dims: vocab {config.vocab_size}, d_model {config.emb_dim}, {config.num_heads} heads x "
             f"{config.head_dim}, {config.num_encoder_layers}+{config.num_decoder_layers} layers, d_ff "
             f"{config.mlp_dim} {'-'.join(config.mlp_activations)}, fp32; {args.input_len} input tokens, "
             f"{args.new_tokens} new tokens; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"]
    if limits:
        lines += ["", "| limit | measured |", "|---|---|"]
        lines += [f"| memory bandwidth, {k} | {v:.1f} GB/s |" for k, v in limits["bandwidth"].items()]
        lines += [f"| fp32 matmul {k} | {v:.1f} GFLOP/s |" for k, v in limits["matmul"].items()]
    if rows:
        hf = "hf_min_s" in rows[0]
        lines += ["", "| batch | ours min (median) s | HF min (median) s | HF / ours min (median) | identical tokens "
                  "| load before / after |", "|---|---|---|---|---|---|"]
        for r in rows:
            theirs = (f"{_fmt(r['hf_min_s'])} ({_fmt(r['hf_median_s'])}) | {_fmt(r['hf_over_ours_min'])} "
                      f"({_fmt(r['hf_over_ours_median'])}) | {r['identical']}") if hf else "- | - | -"
            lines.append(f"| {r['batch']} | {_fmt(r['ours_min_s'])} ({_fmt(r['ours_median_s'])}) | {theirs} | "
                         f"{r['load_before']} / {r['load_after']} |")
        if limits:
            bw = max(limits["bandwidth"].values())
            peak = max(limits["matmul"].values())
            lines += ["", "| batch | ours tokens/s | GB read / call | GB/s achieved | of bandwidth | GFLOP / call | "
                      "GFLOP/s achieved | of best matmul |", "|---|---|---|---|---|---|---|---|"]
            for r in rows:
                gbs = r["bytes_total"] / r["ours_min_s"] / 1e9
                gflops = r["flops"] / r["ours_min_s"] / 1e9
                r["fraction_of_bandwidth"], r["fraction_of_matmul_peak"] = gbs / bw, gflops / peak
                lines.append(f"| {r['batch']} | {r['ours_tokens_per_s']:.0f} | {r['bytes_total'] / 1e9:.3f} | "
                             f"{gbs:.1f} | {100 * gbs / bw:.0f} % | {r['flops'] / 1e9:.1f} | {gflops:.1f} | "
                             f"{100 * gflops / peak:.0f} % |")
            lines.append(f"(bandwidth = best of the kernels above, {bw:.1f} GB/s; matmul = best rate above, "
                         f"{peak:.1f} GFLOP/s; bytes count batch-1 reads, meaningful at batch 1)")
    if pred:
        p = pred
        lines += ["", f"dsbs predict: {p['records']} CQA test records, batch {p['batch_size']}, run inputs length "
                  f"{p['max_input_length']}, decode length {p['max_decode_length']}; input tokens mean "
                  f"{p['input_tokens_mean']:.0f}, max {p['input_tokens_max']}; load {p['load_before']} / {p['load_after']}",
                  "", "| path | seconds | examples/s | / raw generate |", "|---|---|---|---|",
                  f"| raw `decoding.generate` (same ids, padded to {p['input_tokens_max']}) | {p['raw_generate_s']:.2f} | "
                  f"{p['raw_examples_per_s']:.2f} | 1.00 |",
                  f"| raw `decoding.generate`, padded to the run's {p['max_input_length']} (the old predict's work; same "
                  f"tokens: {p['full_length_same_tokens']}) | {p['raw_generate_full_length_s']:.2f} | "
                  f"{p['records'] / p['raw_generate_full_length_s']:.2f} | "
                  f"{p['raw_generate_s'] / p['raw_generate_full_length_s']:.2f} |",
                  f"| `predict.main` warm (restore + tokenize + decode + write) | {p['predict_warm_s']:.2f} | "
                  f"{p['predict_examples_per_s']:.2f} | {p['predict_over_raw']:.2f} |",
                  f"| of which checkpoint restore | {p['restore_s']:.2f} | | |",
                  f"| `predict.main` warm without the restore | {p['predict_warm_s'] - p['restore_s']:.2f} | | "
                  f"{p['predict_excl_restore_over_raw']:.2f} |",
                  f"| `predict.main` cold (+ compiles) | {p['predict_cold_s']:.2f} | | |"]
        if "cli_s" in p:
            lines.append(f"| `dsbs predict` CLI subprocess | {p['cli_s']:.2f} | | start-up (imports) "
                         f"{p['cli_startup_s']:.2f} s; same output: {p['cli_output_same']} |")
        lines.append(f"outputs in input order and complete: {p['predict_output_ok']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _args(argv)
    config = _config(args)
    print(f"config: {config}\nload(1/5/15m) before: {_loadavg()}  {_now()}", flush=True)
    params = make_params(config)
    limits = {}
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as workdir:
        rows = [] if args.skip_decode else bench_decoding(args, config, params, workdir)
        if not args.skip_limits and not args.skip_decode:
            limits["bandwidth"] = measure_bandwidth(args.bandwidth_mb)
            widest = max(int(b) for b in args.batches.split(","))
            n = args.matmul_size
            limits["matmul"] = measure_matmul([(n, n, n), (widest, config.emb_dim, config.mlp_dim),
                                               (widest, config.emb_dim, config.vocab_size)], args.matmul_gflop)
            print(json.dumps(limits), flush=True)
        pred = bench_predict(args, config, params, workdir) if args.predict else None
    text = report(args, config, rows, limits, pred)
    print(text)
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(
            {"args": vars(args), "decode": rows, "limits": limits, "predict": pred, "report": text}, indent=1))
    if rows and "identical" in rows[0] and not all(r["identical"] for r in rows):
        print("ERROR: ours and HF decoded different tokens", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
