"""`dsbs sweep`: the paper's comparisons as one command — methods × data fractions × seeds × sizes.

    dsbs sweep --dataset esnli --format release --src ../shared/data/dsbs_release \
        --split_map train=valid,validation=test,test=test --out sweeps/esnli \
        --methods standard,distill,dsbs,dsbs_llm,dsbs_mixture,single --fractions 12.5,25,50,100 \
        --seeds 0,1,2 --sizes mini

Each run trains the embedded trainer with one method of `dsbs_jax/methods.py` (its task, loss and
evaluation task) and scores the method's gold-label task on `--eval_split`; its `result.json` is
written atomically at the end, so re-running the same command skips finished runs (an interrupted
run resumes from its last checkpoint). `--emit t5x` writes the same grid as gin files and
real T5X runs for a TPU slice instead (`dsbs_jax/experiments/t5x_grid.py`: from the public T5 1.1
checkpoints, the paper's batch, steps and lengths by default; `run_all.sh` runs them, `--collect`
tables them).
Seeds vary initialisation and data order; the data subsets are the same for every seed and
method (`tasks.sources.fraction_ids`), as in the paper's comparisons.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence

from dsbs_jax import methods

# CPU-sized students beside T5 1.1's published sizes: (base size, overrides).
SIZES: Dict[str, tuple] = {
    "tiny": ("tiny", {}),
    "mini": ("tiny", dict(emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128, num_encoder_layers=2,
                          num_decoder_layers=2)),
    **{name: (name, {}) for name in ("small", "base", "large", "xl", "xxl")},
}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The grid and the training settings shared by every run."""

    dataset: str
    data_dir: str
    out_dir: str
    spm_path: Optional[str] = None
    methods: Sequence[str] = methods.DEFAULT_METHODS
    fractions: Sequence[float] = (12.5, 25.0, 50.0, 100.0)
    seeds: Sequence[int] = (0, 1, 2)
    sizes: Sequence[str] = ("mini",)
    split_map: Optional[Mapping[str, str]] = None
    train_steps: int = 1000
    batch_size: int = 32
    optimizer: str = "adamw"
    learning_rate: Optional[float] = None
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 256, "targets": 128})
    eval_split: str = "test"
    max_decode_length: Optional[int] = None  # None: the method's (64 for labels; targets for single)
    eval_batch_size: int = 64
    eval_num_examples: Optional[int] = None
    progress_bar: bool = True

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in methods.METHODS]
        if unknown:
            raise ValueError(f"Unknown method(s) {unknown} (--methods); choose from {list(methods.METHODS)}.")
        unknown = [s for s in self.sizes if s not in SIZES]
        if unknown:
            raise ValueError(f"Unknown size(s) {unknown} (--sizes); choose from {sorted(SIZES)}.")


def task_names(dataset: str, method: str, fraction: float) -> tuple[str, str]:
    """(training task or mixture, evaluation task) of one run."""
    chosen = methods.get(method)
    return chosen.train_task(dataset, fraction), chosen.eval_task(dataset)


def run_dir(config: SweepConfig, method: str, size: str, fraction: float, seed: int) -> str:
    return os.path.join(config.out_dir, "runs", method, size, f"frac{fraction:g}", f"seed{seed}")


def grid(config: SweepConfig) -> List[dict]:
    return [dict(method=m, size=s, fraction=float(f), seed=int(seed))
            for s in config.sizes for f in config.fractions for m in config.methods for seed in config.seeds]


def register(config: SweepConfig):
    """Registers the dataset's task family (idempotent) and returns the vocabulary."""
    import tasks

    vocabulary = tasks.get_vocabulary(config.spm_path)
    tasks.register_dataset_tasks(config.dataset, config.data_dir, vocabulary=vocabulary,
                                 fractions=config.fractions, split_map=config.split_map)
    return vocabulary


def model_config(size: str, vocabulary):
    from dsbs_jax.models.config import t5_1_1_config

    base, overrides = SIZES[size]
    if base in ("tiny",):  # CPU students get a vocabulary-sized embedding
        overrides = {**overrides, "vocab_size": -(-vocabulary.vocab_size // 128) * 128}
    return t5_1_1_config(base, **overrides)


def run_one(config: SweepConfig, run: Mapping, vocabulary) -> dict:
    """Trains and evaluates one grid point unless its result.json exists; returns the result."""
    from dsbs_jax.train.trainer import TrainConfig, train

    directory = run_dir(config, run["method"], run["size"], run["fraction"], run["seed"])
    result_path = os.path.join(directory, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return {**json.load(f), "skipped": True}
    train_task, eval_task = task_names(config.dataset, run["method"], run["fraction"])
    started = time.time()
    metrics = train(TrainConfig(
        method=run["method"], dataset=config.dataset, data_fraction=run["fraction"],
        task_feature_lengths=dict(config.task_feature_lengths),
        model_dir=os.path.join(directory, "model"), train_steps=config.train_steps, batch_size=config.batch_size,
        model=model_config(run["size"], vocabulary), optimizer=config.optimizer,
        learning_rate=config.learning_rate, seed=run["seed"], eval_split=config.eval_split,
        eval_period=None, checkpoint_period=max(config.train_steps // 2, 1), keep_checkpoints=1,
        max_decode_length=config.max_decode_length, eval_batch_size=config.eval_batch_size,
        eval_num_examples=config.eval_num_examples, progress_bar=config.progress_bar, async_checkpointing=False))
    result = {**run, "train_task": train_task, "eval_task": eval_task,
              "accuracy": float(metrics[f"eval/{eval_task}/accuracy"]), "final_loss": float(metrics["final_loss"]),
              "steps": int(metrics["step"]), "wall_time_s": round(time.time() - started, 1)}
    os.makedirs(directory, exist_ok=True)
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    os.replace(result_path + ".tmp", result_path)
    return {**result, "skipped": False}


def run_sweep(config: SweepConfig, log=print) -> List[dict]:
    """Runs the grid (skipping finished runs) and writes tables, plots and JSON into `out_dir`."""
    from dsbs_jax.experiments import plots, results

    vocabulary = register(config)
    runs = []
    points = grid(config)
    for index, point in enumerate(points, 1):
        result = run_one(config, point, vocabulary)
        state = "skipped (finished earlier)" if result["skipped"] else f"{result['wall_time_s']:.0f} s"
        log(f"[{index}/{len(points)}] {point['method']:<11} {point['size']:<5} {point['fraction']:>5g} % "
            f"seed {point['seed']}: accuracy {result['accuracy']:.1f} %  ({state})")
        runs.append(result)
    results.write_all(config.out_dir, runs, extra={"dataset": config.dataset, "config": _jsonable(config)})
    plots.plot_data_size(runs, os.path.join(config.out_dir, "accuracy_vs_data.png"),
                         title=f"{config.dataset}: accuracy vs % of training data")
    if len(config.sizes) > 1:
        plots.plot_model_size(runs, os.path.join(config.out_dir, "accuracy_vs_size.png"),
                              title=f"{config.dataset}: accuracy vs model size")
    return runs


def _jsonable(config: SweepConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _floats(text: str) -> List[float]:
    return [float(x) for x in text.split(",") if x]


def _split_map(text: Optional[str]) -> Optional[Dict[str, str]]:
    if not text:
        return None
    try:
        return dict(item.split("=", 1) for item in text.split(","))
    except ValueError:
        raise SystemExit(f"dsbs sweep: --split_map {text!r} must look like train=valid,validation=test,test=test")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dsbs_jax import flags

    p = flags.OneLineParser(prog="dsbs sweep", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", help="dataset name (required, except with --collect)")
    p.add_argument("--data_root", help="directory holding {dataset}/manifest.json (from dsbs import/rationales)")
    p.add_argument("--format", choices=["release"], help="import --src first (the paper's data release)")
    p.add_argument("--src", help="release root for --format release")
    p.add_argument("--out", required=True, help="local sweep: its runs, tables and plots; --emit t5x: the grid "
                   "directory (local or gs://); --collect: the grid to collect (tables and plots go there)")
    p.add_argument("--spm_path", help="SentencePiece model; local sweeps: default trained on the training inputs; "
                   "--emit t5x: default the tasks' own (T5's public one unless `dsbs import --train_vocab`)")
    p.add_argument("--vocab_size", type=flags.int_at_least(8), default=2000)
    p.add_argument("--methods", default=",".join(methods.DEFAULT_METHODS),
                   help=f"comma-separated, from {', '.join(methods.METHODS)}")
    p.add_argument("--fractions", default="12.5,25,50,100")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sizes", help="local sweeps: default mini (CPU sizes tiny, mini too); --emit t5x: T5 1.1 sizes "
                   "small, base, large, xl, xxl (default base)")
    p.add_argument("--split_map", help="SeqIO split -> our split, e.g. train=valid,validation=test,test=test")
    p.add_argument("--train_steps", type=flags.int_at_least(1),
                   help="local sweeps: default 1000; --emit t5x: fine-tuning steps past the checkpoint (default: the "
                   "size file's, 10,000; XXL 4,000)")
    p.add_argument("--batch_size", type=flags.int_at_least(1),
                   help="local sweeps: default 32; --emit t5x: default the size file's (64; XXL 32)")
    p.add_argument("--optimizer", default="adamw", choices=["adafactor", "adamw"],
                   help="adamw (lr 5e-5, linear decay: the reference's) or adafactor (T5X's, lr 1e-3)")
    p.add_argument("--learning_rate", type=flags.float_in(0, low_open=True))
    p.add_argument("--inputs_length", type=flags.int_at_least(1),
                   help="local sweeps: default 256; --emit t5x: default gin/t5x/datasets/{dataset}.gin's")
    p.add_argument("--targets_length", type=flags.int_at_least(1), help="local: 128; --emit t5x: the dataset file's")
    p.add_argument("--eval_split", default="test")
    p.add_argument("--eval_num_examples", type=flags.int_at_least(1))
    p.add_argument("--emit", choices=["local", "t5x"], default="local",
                   help="t5x: write the grid as real T5X runs for a TPU slice (gin files, commands, run_all.sh)")
    t5x = p.add_argument_group("--emit t5x")
    t5x.add_argument("--initial_checkpoint", help="a T5X checkpoint_N directory (local or gs://); default: the public "
                     "T5 1.1 checkpoint of each size (step 1,000,000)")
    t5x.add_argument("--from_scratch", action="store_true", help="no initial checkpoint")
    t5x.add_argument("--model_dir_root", help="MODEL_DIR = {model_dir_root}/{run}; default {out}/runs")
    t5x.add_argument("--num_partitions", type=flags.int_at_least(1),
                     help="T5X's model-parallel ways (default: the size file's)")
    t5x.add_argument("--tpu", help="the target slice, e.g. v4-32: prints each run's per-device memory and refuses runs "
                     "that cannot fit or whose batch does not divide the data-parallel mesh")
    t5x.add_argument("--no_fit_check", action="store_true", help="print the --tpu memory table but emit anyway")
    t5x.add_argument("--gin_file", action="append", default=[],
                     help="an extra gin file included last by every train and eval config (repeatable)")
    t5x.add_argument("--overwrite", action="store_true", help="replace a different grid already in --out")
    p.add_argument("--collect", action="store_true",
                   help="read a T5X grid's evaluation metrics (--out) and write its tables and plots there")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    a = p.parse_args(argv)
    problem = flags.check_writable(a.out, "--out")  # before any import or training writes there
    if problem:
        print(f"dsbs sweep: error: {problem}", file=sys.stderr)
        return 2
    if a.collect:
        return _guarded(lambda: _collect(a), a)
    if not a.dataset:
        p.error("the following arguments are required: --dataset")
    data_root = a.data_root or os.path.join(a.out, "data")
    if a.format == "release":
        from dsbs_jax.data import import_cli

        if not os.path.exists(os.path.join(data_root, a.dataset, "manifest.json")):
            code = import_cli.main(["--format", "release", "--dataset", a.dataset, "--src", a.src, "--out", data_root])
            if code:
                return code
    if a.emit == "t5x":
        return _guarded(lambda: _emit_t5x(a, data_root), a)
    return _guarded(lambda: _run(a, data_root, os.path.join(data_root, a.dataset)), a)


def _guarded(action, a: argparse.Namespace) -> int:
    from dsbs_jax.experiments import t5x_grid, tpu_fit

    try:
        return action()
    except (t5x_grid.GridError, tpu_fit.FitError) as e:
        print(f"dsbs sweep: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        if a.verbose or os.environ.get("DSBS_VERBOSE"):  # `dsbs sweep --verbose` arrives as the variable
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"dsbs sweep: error: {message} (--verbose for the traceback)", file=sys.stderr)
        return 2


def _emit_t5x(a: argparse.Namespace, data_root: str) -> int:
    from dsbs_jax.experiments import t5x_grid

    if a.optimizer != "adamw":
        raise t5x_grid.GridError(f"--emit t5x: the T5X gin tree trains with the reference's AdamW; drop --optimizer "
                                 f"{a.optimizer} (or edit gin/t5x/finetune.gin)")
    if (a.inputs_length is None) != (a.targets_length is None):
        raise t5x_grid.GridError("--inputs_length and --targets_length go together (or neither: the dataset's)")
    lengths = None if a.inputs_length is None else {"inputs": a.inputs_length, "targets": a.targets_length}
    t5x_grid.emit(t5x_grid.EmitConfig(
        dataset=a.dataset, data_root=data_root, out=a.out, methods=tuple(a.methods.split(",")),
        fractions=tuple(_floats(a.fractions)), seeds=tuple(int(s) for s in a.seeds.split(",")),
        sizes=tuple((a.sizes or "base").split(",")), initial_checkpoint=a.initial_checkpoint,
        from_scratch=a.from_scratch, model_dir_root=a.model_dir_root, finetune_steps=a.train_steps,
        batch_size=a.batch_size, lengths=lengths, learning_rate=a.learning_rate, num_partitions=a.num_partitions,
        spm_path=a.spm_path, extra_gin_files=tuple(a.gin_file), eval_split=a.eval_split, tpu=a.tpu,
        fit_check=not a.no_fit_check, overwrite=a.overwrite))
    return 0


def _collect(a: argparse.Namespace) -> int:
    from dsbs_jax.experiments import t5x_collect

    from dsbs_jax.data import fs

    t5x_collect.collect(a.out)
    with fs.GFile(f"{a.out.rstrip('/')}/results.md") as f:
        print(f.read(), end="")
    return 0


def _run(a: argparse.Namespace, data_root: str, data_dir: str) -> int:
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        raise FileNotFoundError(f"--data_root {data_root}: no {a.dataset}/manifest.json there; import the data first "
                                "(`dsbs import`, or --format release --src DIR).")
    config = SweepConfig(
        dataset=a.dataset, data_dir=data_dir, out_dir=a.out, spm_path=a.spm_path,
        methods=tuple(a.methods.split(",")), fractions=tuple(_floats(a.fractions)),
        seeds=tuple(int(s) for s in a.seeds.split(",")), sizes=tuple((a.sizes or "mini").split(",")),
        split_map=_split_map(a.split_map), train_steps=a.train_steps or 1000, batch_size=a.batch_size or 32,
        optimizer=a.optimizer, learning_rate=a.learning_rate,
        task_feature_lengths={"inputs": a.inputs_length or 256, "targets": a.targets_length or 128},
        eval_split=a.eval_split, eval_num_examples=a.eval_num_examples)
    if config.spm_path is None:
        config = dataclasses.replace(config, spm_path=train_vocabulary(data_dir, config.split_map, a.out, a.vocab_size))
    runs = run_sweep(config)
    from dsbs_jax.experiments.results import markdown_table

    print(markdown_table(runs))
    print(f"tables, plots and JSON in {a.out}")
    return 0


def train_vocabulary(data_dir: str, split_map: Optional[Mapping[str, str]], out: str, vocab_size: int) -> str:
    """A SentencePiece model over the training split's inputs, labels and rationales (no download)."""
    from dsbs_jax.data import tfrecords
    from dsbs_jax.data.vocab import train_sentencepiece

    path = os.path.join(out, "spm.model")
    if os.path.exists(path):
        return path
    split = (split_map or {}).get("train", "train")
    texts = []
    for example in tfrecords.read_split(data_dir, split):
        texts += [example.input, example.label or "", example.teacher_label or "", *example.rationales]
    texts.append("predict: explain: So the answer is")
    return train_sentencepiece(texts, os.path.join(out, "spm"), vocab_size=vocab_size)


if __name__ == "__main__":
    sys.exit(main())
