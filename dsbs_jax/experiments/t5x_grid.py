"""The paper's grid as real T5X runs: `dsbs sweep --emit t5x` writes it, `run_all.sh` runs it.

    dsbs sweep --emit t5x --dataset cqa --data_root gs://B/dsbs/data --out gs://B/dsbs/grids/cqa \
        --methods standard,distill,dsbs,single --fractions 25,100 --sizes base --tpu v4-8

A grid directory (local or gs://) holds everything a TPU worker needs besides this package:

    grid.json            the runs: names, MODEL_DIRs, first and final steps, evaluation tasks
    gin/{run}.gin        the t5x.train config of each run (the generated experiment + this run's settings)
    gin/{run}_eval.gin   its t5x.eval config (the method's gold-label task on --eval_split)
    gin/extra/*.gin      copies of --gin_file extras, included by both
    commands.sh          the plain t5x.train / t5x.eval commands, for reading or running by hand
    run_all.sh           every run in turn, then its evaluation (`dsbs_jax.experiments.t5x_runner`)

Includes resolve on any worker: `gin/t5x/...` against this package's gin tree and `extra/...`
against the grid's own `gin/`, both passed as `--gin_search_paths` (`gin_search_paths()`).

Each run starts from `--initial_checkpoint` (default: the public T5 1.1 checkpoint of its size)
and trains FINETUNE_STEPS past that checkpoint's step: TRAIN_STEPS = step + FINETUNE_STEPS, with
the step read from the checkpoint (`checkpoints.checkpoint_step`). The batch, steps, partitioning
and sequence lengths are the paper's (gin/t5x/sizes/, gin/t5x/datasets/) unless a flag overrides them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from dsbs_jax import gin_gen, methods
from dsbs_jax.data import fs

GRID_FILE = "grid.json"
RUN_ALL = "run_all.sh"
COMMANDS = "commands.sh"
GIN_SUBDIR = "gin"
EXTRA_SUBDIR = "extra"
T5X_SIZES = gin_gen.SIZES
# Settings the grid computes (the step arithmetic, the batch its fit check used): an extra gin file
# may not change them behind its back.
_OWNED_MACROS = ("TRAIN_STEPS", "FINETUNE_STEPS", "PRETRAINED_STEPS", "INITIAL_CHECKPOINT_PATH", "BATCH_SIZE",
                 "TRAIN_STEPS_RELATIVE", "MIXTURE_OR_TASK_NAME", "EVAL_MIXTURE_OR_TASK_NAME", "VOCAB_PATH",
                 "VOCAB_EXTRA_IDS", "MODEL_DIR", "RANDOM_SEED")


class GridError(ValueError):
    """A flag or input of `dsbs sweep --emit t5x` is wrong; the message says which and how to fix it."""


@dataclasses.dataclass(frozen=True)
class GridRun:
    """One t5x.train run of the grid and its evaluation."""

    name: str
    dataset: str
    method: str
    size: str
    fraction: float
    seed: int
    model_dir: str
    train_task: str
    eval_task: str
    initial_checkpoint: Optional[str]
    first_step: int  # the step T5X restores from initial_checkpoint (0 from scratch)
    final_step: int  # TRAIN_STEPS
    batch_size: int
    num_partitions: int

    @property
    def train_gin(self) -> str:
        return f"{GIN_SUBDIR}/{self.name}.gin"

    @property
    def eval_gin(self) -> str:
        return f"{GIN_SUBDIR}/{self.name}_eval.gin"

    @property
    def finetune_steps(self) -> int:
        return self.final_step - self.first_step


@dataclasses.dataclass(frozen=True)
class Grid:
    """What `grid.json` holds; the runner, `--collect` and the tests read it."""

    dataset: str
    data_root: str
    vocab_path: str
    vocab_extra_ids: int
    eval_split: str
    runs: Tuple[GridRun, ...]
    extra_gin_files: Tuple[str, ...] = ()
    model_vocab_size: Optional[int] = None  # set for from-scratch runs on a vocabulary other than T5's

    def eval_output_dir(self, run: GridRun) -> str:
        return f"{run.model_dir}/eval_{self.eval_split}"

    def eval_metrics_file(self, run: GridRun) -> str:
        return f"{self.eval_output_dir(run)}/inference_eval/{run.eval_task}-metrics.jsonl"

    def environment(self) -> Dict[str, str]:
        """What `import tasks` on a worker must see so that its vocabulary equals the model gin's."""
        from tasks import DATA_ROOT_ENV, SPM_PATH_ENV

        return {DATA_ROOT_ENV: self.data_root, SPM_PATH_ENV: self.vocab_path}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Grid":
        data = json.loads(text)
        data["runs"] = tuple(GridRun(**run) for run in data["runs"])
        data["extra_gin_files"] = tuple(data.get("extra_gin_files", ()))
        return cls(**data)


def read_grid(grid_dir: str) -> Grid:
    path = f"{grid_dir.rstrip('/')}/{GRID_FILE}"
    if not fs.exists(path):
        raise FileNotFoundError(f"{path} does not exist: point at the --out directory of `dsbs sweep --emit t5x`")
    with fs.GFile(path) as f:
        return Grid.from_json(f.read())


def gin_search_paths(local_grid_dir: str) -> List[str]:
    """Where a grid's includes resolve: its own gin/ (for extra/...) and this package's gin tree's parent."""
    from dsbs_jax.gin_utils import GIN_DIR

    return [os.path.join(local_grid_dir, GIN_SUBDIR), str(GIN_DIR.parent)]


@dataclasses.dataclass(frozen=True)
class EmitConfig:
    """`dsbs sweep --emit t5x` flags; None means the paper's value from the gin tree."""

    dataset: str
    data_root: str
    out: str
    methods: Sequence[str]
    fractions: Sequence[float]
    seeds: Sequence[int]
    sizes: Sequence[str]
    initial_checkpoint: Optional[str] = None  # None: the public T5 1.1 checkpoint of each size
    from_scratch: bool = False
    model_dir_root: Optional[str] = None  # None: {out}/runs
    finetune_steps: Optional[int] = None
    batch_size: Optional[int] = None
    lengths: Optional[Mapping[str, int]] = None
    learning_rate: Optional[float] = None
    num_partitions: Optional[int] = None
    spm_path: Optional[str] = None
    extra_gin_files: Sequence[str] = ()
    eval_split: str = "test"
    tpu: Optional[str] = None
    fit_check: bool = True
    overwrite: bool = False


def _check_sizes(sizes: Sequence[str]) -> None:
    unknown = [s for s in sizes if s not in T5X_SIZES]
    if unknown:
        raise GridError(f"--sizes {','.join(unknown)}: --emit t5x trains the public T5 1.1 sizes only "
                        f"({', '.join(T5X_SIZES)}); CPU sizes such as mini are for local sweeps")


def _first_step(config: EmitConfig, size: str) -> Tuple[Optional[str], int]:
    """(INITIAL_CHECKPOINT_PATH, the step it holds) of one size."""
    from dsbs_jax.models import checkpoints

    if config.from_scratch:
        return None, 0
    path = config.initial_checkpoint or gin_gen.size_settings(size).initial_checkpoint
    if not fs.is_url(path):
        path = os.path.abspath(path)  # T5X runs from the grid's directory, not from here
    try:
        return path, checkpoints.checkpoint_step(path)
    except (FileNotFoundError, ValueError) as error:
        raise GridError(f"--initial_checkpoint: {error}") from None


def _lengths(config: EmitConfig) -> Dict[str, int]:
    if config.lengths is not None:
        return dict(config.lengths)
    setting = gin_gen.DATASETS.get(config.dataset)
    if setting is None:
        raise GridError(f"dataset {config.dataset!r} has no gin/t5x/datasets/{config.dataset}.gin, so its sequence "
                        "lengths are unknown: pass --inputs_length and --targets_length")
    return {"inputs": setting.inputs, "targets": setting.targets}


def _vocabulary(config: EmitConfig) -> Tuple[str, int]:
    """(VOCAB_PATH, extra ids) exactly as the worker's `import tasks` will build them."""
    from dsbs_jax.data import tfrecords
    from dsbs_jax.data.vocab import DEFAULT_SPM_PATH, extra_ids_for
    from tasks.vocab import dataset_vocabulary

    # A comma-separated list of roots is allowed, as in $DSBS_DATA_ROOT (e.g. data_llm,data).
    dirs = [f"{root.strip().rstrip('/')}/{config.dataset}" for root in config.data_root.split(",") if root.strip()]
    dirs = [d for d in dirs if fs.exists(f"{d}/{tfrecords.MANIFEST}")]
    if not dirs:
        raise GridError(f"--data_root {config.data_root}: no {config.dataset}/manifest.json there; import the data "
                        "first (`dsbs import`) and pass the same --data_root the workers read")
    path, _ = dataset_vocabulary(dirs, [tfrecords.read_manifest(d) for d in dirs], config.spm_path)
    if not fs.is_url(path):
        path = os.path.abspath(path)
    pretrained = not config.from_scratch and config.initial_checkpoint is None
    if pretrained and path != DEFAULT_SPM_PATH:
        raise GridError(f"the public T5 1.1 checkpoints need T5's vocabulary ({DEFAULT_SPM_PATH}), but the tasks "
                        f"would tokenize with {path}; pass --spm_path {DEFAULT_SPM_PATH}, or --from_scratch, or your "
                        "own --initial_checkpoint trained with that vocabulary")
    return path, extra_ids_for(path)


def _model_vocab_size(config: EmitConfig, vocab_path: str, extra_ids: int) -> Optional[int]:
    """The embedding rows a from-scratch model needs for a local vocabulary (T5X's size is T5's 32128).

    Pretrained runs keep their checkpoint's size. A vocabulary on an object store is not read here.
    """
    from dsbs_jax.data.vocab import DEFAULT_SPM_PATH

    if not config.from_scratch or vocab_path == DEFAULT_SPM_PATH or fs.is_url(vocab_path):
        return None
    import sentencepiece

    try:
        pieces = sentencepiece.SentencePieceProcessor(model_file=vocab_path).get_piece_size()
    except (OSError, RuntimeError) as error:
        raise GridError(f"--spm_path {vocab_path}: cannot read the SentencePiece model ({error})") from None
    return 128 * -(-(pieces + extra_ids) // 128)  # T5X pads the embedding to a multiple of 128


def _extra_gin_files(paths: Sequence[str]) -> List[Tuple[str, str]]:
    """(basename, text) of each --gin_file extra; refuses the settings the grid owns."""
    from gin import config_parser

    class _Names(config_parser.ParserDelegate):
        def configurable_reference(self, scoped_name, evaluate):
            return scoped_name

        def macro(self, name):
            return name

    extras = []
    for path in paths:
        if not os.path.isfile(path):
            raise GridError(f"--gin_file {path}: no such file")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            statements = list(config_parser.ConfigParser(text, _Names()))
        except SyntaxError as error:
            raise GridError(f"--gin_file {path}:{error.lineno}: {error.msg}") from None
        for statement in statements:
            if isinstance(statement, config_parser.IncludeStatement):
                raise GridError(f"--gin_file {path}:{statement.location.line_num}: extra gin files may not include "
                                "others (the grid copies each file alone); pass the included file as --gin_file too")
            if (isinstance(statement, config_parser.BindingStatement) and not statement.arg_name
                    and statement.selector in _OWNED_MACROS):
                raise GridError(f"--gin_file {path}:{statement.location.line_num}: {statement.selector} is set by the "
                                "grid itself (use --train_steps, --batch_size, --initial_checkpoint, --spm_path)")
        name = os.path.basename(path)
        if name in {n for n, _ in extras}:
            raise GridError(f"--gin_file {path}: two extra gin files named {name}")
        extras.append((name, text))
    return extras


def plan(config: EmitConfig) -> Grid:
    """The grid's runs, validated (checkpoint steps, vocabulary, fit); writes nothing."""
    _check_sizes(config.sizes)
    unknown = [m for m in config.methods if m not in methods.METHODS]
    if unknown:
        raise GridError(f"--methods {','.join(unknown)}: unknown; choose from {', '.join(methods.METHODS)}")
    if config.initial_checkpoint and len(config.sizes) > 1:
        raise GridError(f"--initial_checkpoint is one checkpoint, but --sizes names {len(config.sizes)} sizes; emit "
                        "one grid per size")
    if config.initial_checkpoint and config.from_scratch:
        raise GridError("--initial_checkpoint and --from_scratch contradict each other; pass one")
    vocab_path, extra_ids = _vocabulary(config)
    lengths = _lengths(config)
    root = (config.model_dir_root or f"{config.out.rstrip('/')}/runs").rstrip("/")
    if not fs.is_url(root):
        root = os.path.abspath(root)
    runs = []
    for size in config.sizes:
        defaults = gin_gen.size_settings(size)
        checkpoint, first_step = _first_step(config, size)
        finetune_steps = config.finetune_steps or defaults.finetune_steps
        for fraction in config.fractions:
            for method_name in config.methods:
                method = methods.get(method_name)
                experiment = gin_gen.Experiment(config.dataset, method_name, size, float(fraction))
                for seed in config.seeds:
                    name = f"{experiment.name}_seed{seed}"
                    runs.append(GridRun(
                        name=name, dataset=config.dataset, method=method_name, size=size, fraction=float(fraction),
                        seed=int(seed), model_dir=f"{root}/{name}", train_task=method.train_task(config.dataset, fraction),
                        eval_task=method.eval_task(config.dataset), initial_checkpoint=checkpoint,
                        first_step=first_step, final_step=first_step + finetune_steps,
                        batch_size=config.batch_size or defaults.batch_size,
                        num_partitions=config.num_partitions or defaults.num_partitions))
    data_root = ",".join(root if fs.is_url(root) else os.path.abspath(root)
                         for root in config.data_root.split(",") if root.strip())
    grid = Grid(dataset=config.dataset, data_root=data_root, vocab_path=vocab_path, vocab_extra_ids=extra_ids,
                eval_split=config.eval_split, runs=tuple(runs),
                model_vocab_size=_model_vocab_size(config, vocab_path, extra_ids),
                extra_gin_files=tuple(f"{EXTRA_SUBDIR}/{n}" for n, _ in _extra_gin_files(config.extra_gin_files)))
    return grid


def fit_rows(grid: Grid, lengths: Mapping[str, int], tpu: str):
    """{run name: MemoryEstimate} on the slice `tpu` (FitError when a mesh cannot be built)."""
    from dsbs_jax.experiments import tpu_fit
    from dsbs_jax.models.config import t5_1_1_config

    slice_ = tpu_fit.tpu_slice(tpu)
    return {run.name: tpu_fit.estimate(t5_1_1_config(run.size), batch_size=run.batch_size, lengths=lengths,
                                       num_partitions=run.num_partitions, paired=methods.get(run.method).paired,
                                       tpu=slice_)
            for run in grid.runs}


def _run_block(grid: Grid, run: GridRun, lengths: Mapping[str, int], config: EmitConfig) -> List[str]:
    checkpoint = "None" if run.initial_checkpoint is None else json.dumps(run.initial_checkpoint)
    source = "from scratch" if run.initial_checkpoint is None else "read from the checkpoint"
    lines = ["", "# ---- This run (dsbs sweep --emit t5x) ----",
             f"INITIAL_CHECKPOINT_PATH = {checkpoint}",
             f"PRETRAINED_STEPS = {run.first_step}  # {source}",
             f"FINETUNE_STEPS = {run.finetune_steps}",
             f"TRAIN_STEPS = {run.final_step}  # PRETRAINED_STEPS + FINETUNE_STEPS: T5X counts on from the checkpoint",
             f"BATCH_SIZE = {run.batch_size}",
             f"TASK_FEATURE_LENGTHS = {json.dumps(dict(lengths))}",
             f"RANDOM_SEED = {run.seed}  # initialisation, dropout and (with the dataset checkpoints) data order",
             f"partitioning.PjitPartitioner.num_partitions = {run.num_partitions}"]
    if config.learning_rate is not None:
        lines.append(f"LEARNING_RATE = {config.learning_rate!r}")
    return lines + _vocabulary_lines(grid) + [f"include '{path}'" for path in grid.extra_gin_files]


def _vocabulary_lines(grid: Grid) -> List[str]:
    lines = [f"VOCAB_PATH = {json.dumps(grid.vocab_path)}  # the same string as the tasks' (T5X compares them)",
             f"VOCAB_EXTRA_IDS = {grid.vocab_extra_ids}"]
    if grid.model_vocab_size:
        lines.append(f"network.T5Config.vocab_size = {grid.model_vocab_size}  # the vocabulary's ids, padded to 128")
    return lines


def _header(run: GridRun, what: str) -> List[str]:
    method = methods.get(run.method)
    return [f"# {what} of grid run {run.name}: {method.summary}; {run.dataset}, {run.fraction:g} % of the training data,",
            f"# T5 1.1 {gin_gen.SIZE_NAMES[run.size]}, seed {run.seed}.",
            f"# Run by the grid's {RUN_ALL} (the exact command is in its {COMMANDS}).",
            "# Written by `dsbs sweep --emit t5x`; re-emit rather than edit.",
            "from __gin__ import dynamic_registration", "", "from t5x import partitioning", "from t5x import utils",
            "from t5x.examples.t5 import network", ""]


def train_gin(grid: Grid, run: GridRun, lengths: Mapping[str, int], config: EmitConfig) -> str:
    experiment = gin_gen.Experiment(run.dataset, run.method, run.size, run.fraction)
    return "\n".join(_header(run, "t5x.train config") + gin_gen.t5x_experiment_body(experiment)
                     + _run_block(grid, run, lengths, config)) + "\n"


def eval_gin(grid: Grid, run: GridRun, lengths: Mapping[str, int]) -> str:
    method = methods.get(run.method)
    body = gin_gen.t5x_eval_body(run.dataset, method, run.size, None)
    if method.decode_length({"targets": -1}) == -1:  # the label follows the rationale
        body += ["# The label follows the rationale: decode up to the training target length.",
                 f"TASK_FEATURE_LENGTHS = {json.dumps(dict(lengths))}"]
    body += [f"utils.DatasetConfig.split = {json.dumps(grid.eval_split)}",
             f"partitioning.PjitPartitioner.num_partitions = {run.num_partitions}"]
    return "\n".join(_header(run, "t5x.eval config") + body + _vocabulary_lines(grid)
                     + [f"include '{path}'" for path in grid.extra_gin_files]) + "\n"


def train_command(run: GridRun, search_paths: Sequence[str]) -> List[str]:
    """`python -m t5x.train ...` for a run, run from the (local copy of the) grid directory."""
    return ["python", "-m", "t5x.train", f"--gin_search_paths={','.join(search_paths)}",
            f"--gin_file={run.train_gin}", f"--gin.MODEL_DIR={json.dumps(run.model_dir)}", "--alsologtostderr"]


def eval_command(grid: Grid, run: GridRun, search_paths: Sequence[str]) -> List[str]:
    return ["python", "-m", "t5x.eval", f"--gin_search_paths={','.join(search_paths)}", f"--gin_file={run.eval_gin}",
            f"--gin.CHECKPOINT_PATH={json.dumps(f'{run.model_dir}/checkpoint_{run.final_step}')}",
            f"--gin.EVAL_OUTPUT_DIR={json.dumps(grid.eval_output_dir(run))}", "--alsologtostderr"]


def _commands_script(grid: Grid, grid_dir: str) -> str:
    paths = ["$PWD/gin", "$(python -c 'import dsbs_jax.gin_utils as g; print(g.GIN_DIR.parent)')"]
    lines = ["#!/usr/bin/env bash",
             "# The grid's commands in order, as run_all.sh runs them (it also skips finished runs, resumes",
             "# interrupted ones and goes on after a failure). Run from a local copy of the grid directory.",
             "set -euo pipefail", 'cd "$(dirname "$0")"']
    lines += [f"export {k}={shlex.quote(v)}" for k, v in grid.environment().items()]
    lines.append(f"GIN_SEARCH_PATHS=\"{','.join(paths)}\"")
    for run in grid.runs:
        for command in (train_command(run, ["$GIN_SEARCH_PATHS"]), eval_command(grid, run, ["$GIN_SEARCH_PATHS"])):
            lines.append(" ".join(shlex.quote(a) if "$GIN_SEARCH_PATHS" not in a else f'"{a}"' for a in command))
    return "\n".join(lines) + "\n"


def _run_all_script(grid_dir: str) -> str:
    return "\n".join([
        "#!/usr/bin/env bash",
        "# Runs every run of this grid in turn on this host, then its test evaluation; skips finished runs,",
        "# resumes interrupted ones from their MODEL_DIR, goes on after a failure and names the failed runs",
        "# at the end (exit 1). On a TPU slice every worker runs it (launch/run_grid_t5x.sh).",
        "#   bash run_all.sh [--only RUN[,RUN]] [--processes N --devices_per_process D]   (--help: all flags)",
        "set -euo pipefail",
        f"exec python -m dsbs_jax.experiments.t5x_runner --grid {shlex.quote(grid_dir)} \"$@\""]) + "\n"


def emit(config: EmitConfig, log=print) -> Grid:
    """Validates everything, then writes the grid directory; returns the grid."""
    grid = plan(config)
    lengths = _lengths(config)
    if config.tpu:
        from dsbs_jax.experiments import tpu_fit

        rows = fit_rows(grid, lengths, config.tpu)
        log(f"Per-device memory on {config.tpu} (AdamW; activations estimated, see dsbs_jax/experiments/tpu_fit.py):")
        log(tpu_fit.markdown_table(rows).rstrip())
        too_big = [name for name, row in rows.items() if not row.fits]
        if too_big and config.fit_check:
            worst = rows[too_big[0]]
            raise GridError(f"{too_big[0]} needs ~{worst.total / tpu_fit.GiB:.1f} GiB per device of {config.tpu}'s "
                            f"{worst.hbm_bytes / tpu_fit.GiB:.0f} GiB ({len(too_big)} run(s) do not fit); raise "
                            "--num_partitions, lower --batch_size, pick a larger --tpu, or --no_fit_check")
    grid_dir = config.out.rstrip("/")
    if not fs.is_url(grid_dir):
        grid_dir = os.path.abspath(grid_dir)
    grid_file = f"{grid_dir}/{GRID_FILE}"
    if fs.exists(grid_file) and not config.overwrite:
        with fs.GFile(grid_file) as f:
            if f.read() != grid.to_json():
                raise GridError(f"--out {config.out} already holds a different grid ({GRID_FILE}); pass another --out, "
                                "or --overwrite to replace its files (its runs' MODEL_DIRs are kept)")
    files = {f"{GIN_SUBDIR}/{EXTRA_SUBDIR}/{name}": text for name, text in _extra_gin_files(config.extra_gin_files)}
    for run in grid.runs:
        files[run.train_gin] = train_gin(grid, run, lengths, config)
        files[run.eval_gin] = eval_gin(grid, run, lengths)
    files[COMMANDS] = _commands_script(grid, grid_dir)
    files[RUN_ALL] = _run_all_script(grid_dir)
    files[GRID_FILE] = grid.to_json()  # last: a grid.json means the grid is complete
    for relative, text in files.items():
        path = f"{grid_dir}/{relative}"
        fs.makedirs(os.path.dirname(path))
        with fs.GFile(path, "w") as f:
            f.write(text)
        if relative.endswith(".sh") and not fs.is_url(path):
            os.chmod(path, 0o755)
    log(f"wrote {len(grid.runs)} runs to {grid_dir}: run them with `bash {grid_dir}/{RUN_ALL}` (on a TPU slice: "
        f"launch/run_grid_t5x.sh --grid {grid_dir}), then `dsbs sweep --collect --out {grid_dir}`")
    return grid
