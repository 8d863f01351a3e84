"""`dsbs rehearse`: the Cloud TPU path end to end on this machine's CPU, with real T5X at toy size.

    dsbs rehearse --src ../shared/data/dsbs_release --out /tmp/rehearsal \
        --methods standard,distill,dsbs,dsbs_llm,single --fractions 50,100

What a TPU user runs, in the same order and through the same code, before paying for a slice:
1. `dsbs import` of the first `--limit` examples of the paper's release (with its PaLM rationales)
   and a local SentencePiece vocabulary (no GCS here);
2. a T5 1.1-architecture checkpoint in T5X's format at step 1,000,000 with factored Adafactor slots,
   like the public ones, at toy dimensions (`toy_model.gin` gives T5X the same dimensions);
3. `dsbs sweep --emit t5x --initial_checkpoint` of the grid (every run trains FINETUNE_STEPS past
   step 1,000,000, the public checkpoints' step);
4. the grid's `run_all.sh`: real `t5x.train` then `t5x.eval` for every run (`--processes 2`: each
   run as two processes joined by `jax.distributed` over gloo, like two hosts of a slice);
5. `dsbs sweep --collect`: the tables and plots.
The toy student learns little in a few steps; the point is that every step of the path runs.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Optional, Sequence

from dsbs_jax import methods

PRETRAINED_STEP = 1_000_000  # the public T5 1.1 checkpoints' step
TOY_DIMS = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=2, num_decoder_layers=2)


def toy_config(vocab_size: int):
    """T5 1.1's architecture (gated GELU, relative attention, untied head) at toy dimensions."""
    from dsbs_jax.models.config import t5_1_1_config

    return t5_1_1_config("small", vocab_size=vocab_size, **TOY_DIMS)


def padded_vocab_size(pieces: int) -> int:
    """T5X's rule: the embedding rounds the vocabulary up to a multiple of 128."""
    return 128 * math.ceil(pieces / 128)


def write_pretrained_checkpoint(model_dir: str, vocab_size: int, seed: int = 0) -> str:
    """A toy checkpoint_1000000 with zero Adafactor slots, factored as in the public checkpoints."""
    import jax

    from dsbs_jax.models import checkpoints, network

    path = os.path.join(model_dir, f"checkpoint_{PRETRAINED_STEP}")
    if os.path.isdir(path):
        return path
    params = network.init_params(toy_config(vocab_size), jax.random.PRNGKey(seed))
    # Toy matrices are 16..64 wide: factor those of >= 16 rows/columns, as T5X does for >= 128 at full size.
    return checkpoints.save_t5x_checkpoint(params, model_dir, PRETRAINED_STEP, min_dim_size_to_factor=16)


def toy_model_gin(vocab_size: int, *, num_partitions: int, eval_period: int, checkpoint_period: int) -> str:
    """The extra gin file of the rehearsal grid: toy dimensions, float32, frequent logs and checkpoints."""
    dims = "\n".join(f"  {k} = {v}" for k, v in TOY_DIMS.items())
    return "\n".join([
        "# The rehearsal's toy T5 1.1 (written by `dsbs rehearse`): the dimensions of its step-1,000,000",
        "# checkpoint, float32 on CPU, a log line every step, frequent evaluation and checkpoints.",
        "from __gin__ import dynamic_registration", "", "from t5x import partitioning",
        "from t5x.examples.t5 import network", "",
        "network.T5Config:", f"  vocab_size = {vocab_size}", "  dtype = 'float32'", dims, "",
        "STATS_PERIOD = 1", f"EVAL_PERIOD = {eval_period}", f"CHECKPOINT_PERIOD = {checkpoint_period}", "EVAL_STEPS = 2",
        "# T5X's CPU mesh ignores num_partitions (hosts x local devices); pin the same 'model' axis here.",
        "partitioning.PjitPartitioner.num_partitions = None",
        f"partitioning.PjitPartitioner.model_parallel_submesh = (1, {num_partitions})", ""])


def prepare(out: str, *, src: Optional[str], data_root: Optional[str], dataset: str, limit: int, vocab_pieces: int,
            methods_: Sequence[str], fractions: Sequence[float], seeds: Sequence[int], train_steps: int,
            batch_size: int, lengths: dict, num_partitions: int, eval_period: int, checkpoint_period: int,
            log=print):
    """Steps 1-3: data, the step-1,000,000 checkpoint and the emitted grid; returns the grid."""
    from dsbs_jax.data import import_cli, tfrecords
    from dsbs_jax.experiments import t5x_grid

    out = os.path.abspath(out)
    data_root = os.path.abspath(data_root or os.path.join(out, "data"))
    dataset_dir = os.path.join(data_root, dataset)
    if not os.path.exists(os.path.join(dataset_dir, tfrecords.MANIFEST)):
        if not src:
            raise t5x_grid.GridError(f"no {dataset_dir}/manifest.json: pass --src (the paper's release) to import it")
        log(f"1. importing the first {limit} examples per split of {dataset} from {src}")
        code = import_cli.main(["--format", "release", "--dataset", dataset, "--src", src, "--out", data_root,
                                "--limit", str(limit), "--train_vocab", str(vocab_pieces)])
        if code:
            raise t5x_grid.GridError(f"dsbs import failed (exit {code})")
    manifest = tfrecords.read_manifest(dataset_dir)
    vocabulary = manifest.get("vocabulary")
    if not vocabulary:
        raise t5x_grid.GridError(f"{dataset_dir}/manifest.json records no vocabulary: import with --train_vocab N")
    vocab_size = padded_vocab_size(vocabulary["vocab_size"])
    checkpoint = write_pretrained_checkpoint(os.path.join(out, "pretrained"), vocab_size)
    log(f"2. toy T5 1.1 checkpoint at step {PRETRAINED_STEP} (vocabulary {vocab_size}): {checkpoint}")
    toy_gin = os.path.join(out, "toy_model.gin")
    with open(toy_gin, "w", encoding="utf-8") as f:
        f.write(toy_model_gin(vocab_size, num_partitions=num_partitions, eval_period=eval_period,
                              checkpoint_period=checkpoint_period))
    grid = t5x_grid.emit(t5x_grid.EmitConfig(
        dataset=dataset, data_root=data_root, out=os.path.join(out, "grid"), methods=tuple(methods_),
        fractions=tuple(fractions), seeds=tuple(seeds), sizes=("small",), initial_checkpoint=checkpoint,
        finetune_steps=train_steps, batch_size=batch_size, lengths=lengths, num_partitions=num_partitions,
        extra_gin_files=(toy_gin,), overwrite=True), log=lambda text: log(f"3. {text}"))
    return grid


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dsbs_jax import flags
    from dsbs_jax.experiments import t5x_collect, t5x_grid, t5x_runner

    p = flags.OneLineParser(prog="dsbs rehearse", description=__doc__.split("\n\n")[0],
                            epilog="Expected time: about a minute per run on 2 CPU cores (T5X start-up and "
                                   "compilation dominate); --processes 2 about doubles it.")
    p.add_argument("--out", required=True, help="directory for the data, checkpoint, grid, runs and tables")
    p.add_argument("--src", help="the paper's data release (e.g. ../shared/data/dsbs_release)")
    p.add_argument("--data_root", help="an existing data root (from dsbs import --train_vocab) instead of --src")
    p.add_argument("--dataset", default="cqa")
    p.add_argument("--limit", type=flags.int_at_least(20), default=300, help="examples per split to import")
    p.add_argument("--vocab_pieces", type=flags.int_at_least(64), default=500)
    p.add_argument("--methods", default="standard,dsbs,single", help=f"from {', '.join(methods.METHODS)}")
    p.add_argument("--fractions", default="100")
    p.add_argument("--seeds", default="0")
    p.add_argument("--train_steps", type=flags.int_at_least(1), default=4, help="fine-tuning steps past 1,000,000")
    p.add_argument("--batch_size", type=flags.int_at_least(1), default=8)
    p.add_argument("--inputs_length", type=flags.int_at_least(8), default=128)
    p.add_argument("--targets_length", type=flags.int_at_least(8), default=64)
    p.add_argument("--processes", type=flags.int_at_least(1), default=1,
                   help="processes per run (jax.distributed over gloo), like hosts of a slice")
    p.add_argument("--devices_per_process", type=flags.int_at_least(1), default=4)
    p.add_argument("--num_partitions", type=flags.int_at_least(1), default=1)
    p.add_argument("--eval_period", type=flags.int_at_least(1), default=2)
    p.add_argument("--checkpoint_period", type=flags.int_at_least(1), default=2)
    a = p.parse_args(argv)
    try:
        grid = prepare(a.out, src=a.src, data_root=a.data_root, dataset=a.dataset, limit=a.limit,
                       vocab_pieces=a.vocab_pieces, methods_=a.methods.split(","),
                       fractions=[float(f) for f in a.fractions.split(",")],
                       seeds=[int(s) for s in a.seeds.split(",")], train_steps=a.train_steps,
                       batch_size=a.batch_size, lengths={"inputs": a.inputs_length, "targets": a.targets_length},
                       num_partitions=a.num_partitions, eval_period=a.eval_period,
                       checkpoint_period=a.checkpoint_period)
    except (t5x_grid.GridError, ValueError, OSError) as error:
        return flags.report_error("dsbs rehearse", error, code=2)
    grid_dir = os.path.join(os.path.abspath(a.out), "grid")
    print(f"4. running the grid's run_all.sh ({len(grid.runs)} runs, real t5x.train and t5x.eval)", flush=True)
    runner_args = ["--grid", grid_dir, "--work_dir", os.path.join(os.path.abspath(a.out), "work")]
    if a.processes > 1:
        runner_args += ["--processes", str(a.processes), "--devices_per_process", str(a.devices_per_process)]
    code = t5x_runner.main(runner_args)
    print("5. dsbs sweep --collect", flush=True)
    t5x_collect.collect(grid_dir)
    with open(os.path.join(grid_dir, "results.md"), encoding="utf-8") as f:
        print(f.read(), end="")
    return code


if __name__ == "__main__":
    sys.exit(main())
