"""Our training step (tokens/s, MFU) vs Hugging Face PyTorch T5 on CPU, and input-pipeline headroom.

    python benchmarks/bench_train_step.py                        # REFERENCE.md CPU anchor dims
    python benchmarks/bench_train_step.py --size tiny --steps 5  # smoke run, ~1 min

Three measurements in one run:

1. **Train step.** `dsbs_jax.train.train_step.make_train_step` exactly as the trainer runs it
   (sharded TrainState on a 1x1 mesh, T5X loss with z-loss 1e-4, Adafactor with T5X defaults,
   donated state), against HF `T5ForConditionalGeneration` + `transformers` Adafactor with the
   same dims, batch and lengths (the torch side is `bench_model_vs_pytorch.make_torch_step`).
   Steps are timed interleaved (one ours, one torch) after warm-up; medians are reported.
2. **MFU.** Model FLOPs per step are XLA's own count for our compiled step
   (`compiled.cost_analysis()["flops"]`: every matmul, forward and backward, plus elementwise
   work), and, for comparison, the 6 * N * tokens rule (6 * batch * (N_encoder * inputs +
   N_decoder * targets), N without the lookup-only token embedding; attention scores excluded). The same model-FLOPs figure is used for both frameworks (same network).
   CPU peak = the best rate of a jitted 2048x2048x2048 fp32 matmul measured in this run
   (2 * 2048^3 FLOPs per call), i.e. the attainable fp32 GEMM rate of this machine's cores, not
   a datasheet number. MFU = model FLOPs / step time / peak.
3. **Input pipeline.** Examples/s that the SeqIO pipeline of the trainer (`input_pipeline.BatchIterator`:
   TFRecords -> tasks preprocessing -> tokenization -> EncDecFeatureConverter packing -> batches)
   produces on its own, against the examples/s the train step consumes (steps/s * examples per
   batch). Target: >= 5x headroom. Data: the release's CQA train split with its PaLM rationales
   (`read_release`), written as TFRecords and registered with `tasks.register_dataset_tasks` as
   `cqa_dsbs_gold` (a 2000-piece vocabulary is trained on it: T5's is not downloadable here).
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

REPO = pathlib.Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small")
    p.add_argument("--vocab_size", type=int, default=32128)
    p.add_argument("--num_layers", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--input_len", type=int, default=128)
    p.add_argument("--target_len", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--only", choices=("both", "jax", "torch"), default="both")
    p.add_argument("--pipeline_batches", type=int, default=200, help="batches timed for the input pipeline")
    p.add_argument("--release_dir", default=os.environ.get("DSBS_RELEASE_DIR", str(REPO.parent / "shared" / "data" /
                                                                                  "dsbs_release")))
    p.add_argument("--skip_pipeline", action="store_true")
    return p.parse_args()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_our_step(config, args):
    """(step() -> loss, XLA flops per step, 6N-rule flops per step, compile seconds) of our jitted step."""
    import jax
    import numpy as np

    from bench_model_vs_pytorch import _batch
    from dsbs_jax.models import network, partitioning
    from dsbs_jax.train import optimizers, train_state, train_step
    from dsbs_jax.train.losses import LossConfig

    mesh = partitioning.create_mesh(1, 1)
    rules = partitioning.STANDARD_LOGICAL_AXIS_RULES
    tx = optimizers.make_optimizer(optimizers.OptimizerConfig("adafactor"), 1000)
    boxed = network.abstract_params(config)
    shardings = train_state.state_shardings(tx, boxed, mesh, rules)
    state = train_state.init_state_sharded(lambda: network.init_params(config, jax.random.PRNGKey(0)), tx, shardings)
    # Parameters that multiply each encoder / decoder token (the lookup-only embedding excluded;
    # the decoder's logits_dense is a matmul per target token and counts).
    n_enc = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params["encoder"]))
    n_dec = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params["decoder"]))
    six_n = 6 * args.batch * (n_enc * args.input_len + n_dec * args.target_len)
    step_fn = train_step.make_train_step(network.Transformer(config), LossConfig(), shardings, mesh, rules,
                                         enable_dropout=False)
    inputs, targets, dec_in = _batch(args)
    batch = {"encoder_input_tokens": inputs, "decoder_target_tokens": targets, "decoder_input_tokens": dec_in,
             "decoder_loss_weights": (targets > 0).astype(np.int32)}
    batch = jax.device_put(batch, train_step.batch_sharding(mesh))
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = step_fn.jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0))
    holder = {"state": state}

    def step():
        holder["state"], metrics = step_fn(holder["state"], batch)
        return float(metrics["targets/loss"])

    step.holder = holder  # gpu_check blocks on the whole updated state, not only the loss
    return step, flops, six_n, compile_s


def bench_pipeline(args, examples_per_batch_hint: int):
    """(examples/s, rows/s, examples per packed row) of the trainer's input pipeline on CQA."""
    import numpy as np

    from dsbs_jax.data import tfrecords
    from dsbs_jax.data.adapters.release import read_release
    from dsbs_jax.data.vocab import train_sentencepiece
    from dsbs_jax.train import input_pipeline
    import tasks

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    train = list(read_release(args.release_dir, "cqa", "train"))  # real inputs + PaLM rationales
    test = list(read_release(args.release_dir, "cqa", "test", limit=200))
    tfrecords.write_split(str(work / "cqa"), "train", train, num_shards=4)
    tfrecords.write_split(str(work / "cqa"), "valid", test[:100])
    tfrecords.write_split(str(work / "cqa"), "test", test[100:])
    spm = train_sentencepiece([e.input + " " + (e.rationale or "") for e in train[:3000]], str(work / "spm"),
                              vocab_size=2000)
    tasks.register_dataset_tasks("cqa", str(work / "cqa"), vocabulary=tasks.get_vocabulary(spm), fractions=(100.0,))
    config = input_pipeline.DataConfig(mixture_or_task_name="cqa_dsbs_gold",
                                       task_feature_lengths={"inputs": args.input_len, "targets": args.target_len},
                                       batch_size=args.batch, seed=0)
    it = input_pipeline.BatchIterator(config)
    for _ in range(5):  # warm-up: file opening, tf.data graph building
        next(it)
    t0 = time.perf_counter()
    segments = 0
    for _ in range(args.pipeline_batches):
        b = next(it)
        segments += int(np.sum(np.max(b["decoder_segment_ids"], axis=1)))
    dt = time.perf_counter() - t0
    return segments / dt, args.pipeline_batches * args.batch / dt, segments / (args.pipeline_batches * args.batch)


def main() -> None:
    args = _args()
    import jax

    from bench_model_vs_pytorch import _config, _loadavg, make_torch_step, matmul_flops

    config = _config(args)
    tokens = args.batch * (args.input_len + args.target_len)
    print(f"config: {config}")
    print(f"batch {args.batch} x ({args.input_len} in + {args.target_len} out) = {tokens} tokens/step; "
          f"cpus={os.cpu_count()} host={platform.node()} jax={jax.__version__} load before: {_loadavg()}")
    peak = matmul_flops(2048, 2048, 2048)
    print(f"CPU peak (best jitted 2048^3 fp32 matmul): {peak / 1e9:.1f} GFLOP/s")

    steps = {}
    if args.only in ("both", "jax"):
        steps["ours"], flops, six_n, compile_s = make_our_step(config, args)
        print(f"ours: compile {compile_s:.1f}s; XLA flops/step {flops / 1e9:.2f} GFLOP; "
              f"6*N*tokens (N without the embedding lookup) {six_n / 1e9:.2f} GFLOP")
    if args.only in ("both", "torch"):
        steps["torch"] = make_torch_step(config, args)
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: [] for name in steps}
    from tqdm import tqdm

    for _ in tqdm(range(args.steps), desc="timed steps (interleaved)"):
        for name, step in steps.items():
            times[name].append(_timed(step))
    print(f"load after: {_loadavg()}  date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in med.items():
        line = f"{name:5s}: median {m:.3f}s/step (min {min(times[name]):.3f}) = {tokens / m:.0f} tokens/s"
        if "ours" in steps:
            line += (f"; MFU (XLA flops) {flops / m / peak * 100:.1f}%"
                     f"; MFU (6N rule) {six_n / m / peak * 100:.1f}%")
        print(line)
    if len(med) == 2:
        print(f"tokens/s ratio ours/torch: {med['torch'] / med['ours']:.2f}")
    if not args.skip_pipeline and "ours" in med:
        ex_s, rows_s, per_row = bench_pipeline(args, args.batch)
        consumed = args.batch * per_row / med["ours"]
        print(f"input pipeline: {ex_s:.0f} examples/s ({rows_s:.0f} packed rows/s, {per_row:.2f} examples/row); "
              f"train step consumes {consumed:.1f} examples/s -> headroom {ex_s / consumed:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
