"""Generates the experiment gin files of both trees from the method registry.

    python -m dsbs_jax.gin_gen --write     # rewrite gin/experiments/, gin/t5x/experiments/, gin/t5x/datasets/
    python -m dsbs_jax.gin_gen --check     # exit 1 listing files that differ (tests/test_gin_gen.py)

Each experiment is (dataset, method, data fraction, size). Its file in `gin/experiments/` runs the
embedded trainer (`dsbs train`), its namesake in `gin/t5x/experiments/` runs real T5X
(`python -m t5x.train`); both take the task, loss, evaluation task and decode length from
`dsbs_jax.methods`, and the paper's optimizer, batch and steps from the shared run configs.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from dsbs_jax import methods

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / "gin"
GENERATED = "Generated from dsbs_jax/methods.py by `python -m dsbs_jax.gin_gen --write`; do not edit."


@dataclasses.dataclass(frozen=True)
class DatasetSetting:
    """Sequence lengths (the reference truncates at 1024/256; unpacked, so keep them tight) and why."""

    inputs: int
    targets: int
    why: str


DATASETS: Mapping[str, DatasetSetting] = {
    "anli1": DatasetSetting(256, 256, "release valid: inputs <= 109 words / 660 chars (~165 tokens), rationales <= "
                            "91 words / 573 chars (~140 tokens; the single-task target adds the label)"),
    "asdiv": DatasetSetting(256, 128, "as SVAMP (not in the shared release here; not measured)"),
    "cqa": DatasetSetting(256, 128, "release train: inputs <= 75 words / 460 chars, teacher rationales <= 65 words "
                          "/ 358 chars (~1.3-1.5 T5 pieces per word: <= ~115 and <= ~100 tokens)"),
    "esnli": DatasetSetting(256, 128, "release valid: premise</s>hypothesis <= 95 words / 469 chars, rationales <= "
                            "62 words / 324 chars"),
    "svamp": DatasetSetting(256, 128, "not in the shared release here, so not measured: problems are a few sentences "
                            "and equations a few tokens; raise if seqio warns about truncation"),
    "svamp_asdiv": DatasetSetting(256, 128, "as SVAMP; SVAMP train + ASDiv train, tested on SVAMP test"),
}
SIZES = ("small", "base", "large", "xl", "xxl")
SIZE_NAMES = {"small": "Small (77M)", "base": "Base (248M)", "large": "Large (783M)", "xl": "XL (2.85B)",
              "xxl": "XXL (11.3B)"}
# The paper's T5-Base results at 100 % of the data (../shared/REFERENCE.md).
PAPER_RESULTS = {
    ("esnli", "standard"): 88.38, ("anli1", "standard"): 43.58, ("cqa", "standard"): 62.19,
    ("svamp", "standard"): 62.63, ("esnli", "single"): 88.88, ("anli1", "single"): 43.50,
    ("cqa", "single"): 61.37, ("svamp", "single"): 63.00, ("esnli", "dsbs"): 89.51, ("anli1", "dsbs"): 49.58,
    ("cqa", "dsbs"): 63.29, ("svamp", "dsbs"): 65.50,
}
PAPER_DATASETS = ("esnli", "anli1", "cqa", "svamp", "svamp_asdiv")


@dataclasses.dataclass(frozen=True)
class Experiment:
    dataset: str
    method: str
    size: str = "base"
    fraction: float = 100.0

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.method}{methods.fraction_suffix(self.fraction)}_{self.size}"


def experiments() -> List[Experiment]:
    """The paper's comparisons: every method on every dataset at T5-Base, the data-size headline
    points (e-SNLI 12.5 %, CQA 25 %, ANLI 80 % at Large) and the model-size curve on CQA."""
    out = [Experiment(d, m) for d in PAPER_DATASETS for m in methods.METHODS]
    out += [Experiment("esnli", m, "base", 12.5) for m in ("standard", "dsbs")]
    out += [Experiment("cqa", m, "base", 25.0) for m in ("standard", "dsbs")]
    out += [Experiment("anli1", m, "large", 80.0) for m in ("distill", "dsbs_llm")]
    out += [Experiment("cqa", m, s) for m in ("standard", "dsbs") for s in SIZES if s != "base"]
    return sorted(out, key=lambda e: e.name)


def eval_config_name(dataset: str, method: methods.Method, size: str) -> str:
    """The t5x.eval experiment that scores a method: `{D}_eval_{size}` for `predict: ` students."""
    variant = "" if method.eval_variant == "label" else f"_{method.eval_variant}"
    return f"{dataset}_eval{variant}_{size}"


def _paper_note(e: Experiment) -> str:
    result = PAPER_RESULTS.get((e.dataset, e.method))
    if result is None or e.fraction != 100.0 or e.size != "base":
        return "Result: not run here (no pretrained T5 on this machine)."
    return f"Result: not run here (no pretrained T5 on this machine); the paper reports {result:.2f} %."


def _header(e: Experiment, command: List[str]) -> List[str]:
    method = methods.get(e.method)
    frac = "" if e.fraction == 100.0 else f", {e.fraction:g} % of the training data"
    return [f"# {method.summary}; {e.dataset}{frac}, T5 1.1 {SIZE_NAMES[e.size]}.", "#"] + \
           [f"#   {line}" for line in command] + ["#", f"# {GENERATED}", "# Expected runtime: not measured here.",
                                                    f"# {_paper_note(e)}"]


def embedded_experiment(e: Experiment) -> str:
    """gin/experiments/{name}.gin for `dsbs train`."""
    method = methods.get(e.method)
    setting = DATASETS[e.dataset]
    command = [f"DSBS_DATA_ROOT=/data/dsbs dsbs train --gin_file=experiments/{e.name}.gin \\",
               f"  --gin.MODEL_DIR=/runs/{e.name} --gin.INITIAL_CHECKPOINT_PATH=/ckpts/t5-v1_1-{e.size}"]
    lines = _header(e, command) + [
        f"include 'models/{e.size}.gin'", "include 'runs/finetune.gin'", "",
        "MIXTURE_OR_TASK_MODULE = 'tasks'",
        f"METHOD = '{method.name}'  # trains {method.train_task(e.dataset, e.fraction)}, "
        f"scored on {method.eval_task(e.dataset)}",
        f"DATASET = '{e.dataset}'"]
    if e.fraction != 100.0:
        lines.append(f"DATA_FRACTION = {e.fraction:g}")
    lines += [f"TASK_FEATURE_LENGTHS = {{'inputs': {setting.inputs}, 'targets': {setting.targets}}}",
              "TRAIN_STEPS = 10000", "EVAL_PERIOD = 1000"]
    return "\n".join(lines) + "\n"


def t5x_experiment(e: Experiment) -> str:
    """gin/t5x/experiments/{name}.gin for `python -m t5x.train`."""
    method = methods.get(e.method)
    command = [f"python -m t5x.train --gin_file=gin/t5x/experiments/{e.name}.gin \\",
               f"  --gin.MODEL_DIR=\\\"gs://BUCKET/dsbs/{e.name}/$(date +%Y%m%d_%H%M%S)\\\"",
               f"(on a TPU slice: launch/train_t5x.sh --experiment {e.name} --model_dir gs://BUCKET/dsbs ...)",
               f"then score it: gin/t5x/experiments/{eval_config_name(e.dataset, method, e.size)}.gin"]
    imports = ["from __gin__ import dynamic_registration", "", "from t5x import utils", ""] \
        if _decodes_to_target_length(method) else []
    return "\n".join(_header(e, command) + imports + t5x_experiment_body(e)) + "\n"


def t5x_experiment_body(e: Experiment) -> List[str]:
    """The includes and method settings of a T5X training config (needs `utils` imported for `single`).

    Shared by the committed experiment files and `dsbs sweep --emit t5x`, which adds its run's settings.
    """
    method = methods.get(e.method)
    loss = method.loss
    lines = [f"include 'gin/t5x/sizes/{e.size}.gin'"]
    if e.dataset in DATASETS:  # other datasets: the emitting sweep sets TASK_FEATURE_LENGTHS itself
        lines.append(f"include 'gin/t5x/datasets/{e.dataset}.gin'")
    if method.paired:
        lines.append("include 'gin/t5x/paired.gin'  # the paper's paired loss: dsbs_jax.t5x_model")
    lines += ["", f"MIXTURE_OR_TASK_NAME = \"{method.train_task(e.dataset, e.fraction)}\"",
              f"EVAL_MIXTURE_OR_TASK_NAME = \"{method.eval_task(e.dataset)}\"  # gold labels, as the method is scored",
              f"Z_LOSS = {loss.z_loss!r}  # the reference has no z-loss (T5X's model gin: 1e-4)"]
    if method.paired:
        lines.append(f"ALPHA = {loss.alpha!r}")
    else:
        lines.append(f"LOSS_NORMALIZING_FACTOR = {_gin_value(loss.loss_normalizing_factor)}")
    if _decodes_to_target_length(method):
        lines += ["# The label follows the rationale: decode up to the target length, not the gold label's.",
                  "infer_eval/utils.DatasetConfig.task_feature_lengths = %TASK_FEATURE_LENGTHS"]
    return lines


def _decodes_to_target_length(method: methods.Method) -> bool:
    return method.decode_length({"targets": -1}) == -1


def t5x_eval(dataset: str, variant: str, size: str) -> str:
    """gin/t5x/experiments/{D}_eval[_{variant}]_{size}.gin for `python -m t5x.eval`."""
    scored = [m.name for m in methods.METHODS.values() if m.eval_variant == variant]
    method = methods.get(scored[0])
    name = eval_config_name(dataset, method, size)
    lines = [f"# Scores a finetuned {dataset} checkpoint of {', '.join(scored)} (T5 1.1 {SIZE_NAMES[size]}) on the "
             "gold-label test split.", "#",
             f"#   python -m t5x.eval --gin_file=gin/t5x/experiments/{name}.gin \\",
             f"#     --gin.CHECKPOINT_PATH=\\\"gs://BUCKET/dsbs/{dataset}_{scored[0]}_{size}/TIMESTAMP/checkpoint_1010000\\\" \\",
             f"#     --gin.EVAL_OUTPUT_DIR=\\\"gs://BUCKET/dsbs/{dataset}_{scored[0]}_{size}/TIMESTAMP/eval_test\\\"",
             "#", f"# {GENERATED}",
             "# Expected runtime: greedy decoding of the test split only (not measured here).",
             f"# Accuracy lands in EVAL_OUTPUT_DIR ({method.eval_task(dataset)}-metrics.jsonl).",
             "from __gin__ import dynamic_registration", "", "from t5x import partitioning", ""]
    lines += t5x_eval_body(dataset, method, size, DATASETS.get(dataset))
    lines += [f"partitioning.PjitPartitioner.num_partitions = {size_settings(size).num_partitions}"]
    return "\n".join(lines) + "\n"


def t5x_eval_body(dataset: str, method: methods.Method, size: str, lengths: Optional["DatasetSetting"]) -> List[str]:
    """Includes, task and (for `single`, which decodes to the target length) lengths of a t5x.eval config."""
    lines = [f"include 't5x/examples/t5/t5_1_1/{size}.gin'",
             "include 'gin/t5x/eval.gin'  # after the model gin: it sets DROPOUT_RATE", "",
             f"MIXTURE_OR_TASK_NAME = \"{method.eval_task(dataset)}\""]
    if _decodes_to_target_length(method) and lengths is not None:
        lines += ["# The label follows the rationale: decode up to the training target length.",
                  f"TASK_FEATURE_LENGTHS = {{\"inputs\": {lengths.inputs}, \"targets\": {lengths.targets}}}"]
    return lines


@dataclasses.dataclass(frozen=True)
class SizeSettings:
    """What gin/t5x/sizes/{size}.gin sets: the paper's batch and steps, partitioning, the public checkpoint."""

    batch_size: int
    finetune_steps: int
    num_partitions: int
    initial_checkpoint: str


def size_settings(size: str) -> SizeSettings:
    """Reads gin/t5x/sizes/{size}.gin (the one place these numbers live)."""
    from gin import config_parser

    class _Literals(config_parser.ParserDelegate):
        def configurable_reference(self, scoped_name, evaluate):
            return scoped_name

        def macro(self, name):
            return name

    path = GIN_DIR / "t5x" / "sizes" / f"{size}.gin"
    values = {}
    for statement in config_parser.ConfigParser(path.read_text(), _Literals()):
        if isinstance(statement, config_parser.BindingStatement):
            values[statement.arg_name or statement.selector] = statement.value
    return SizeSettings(batch_size=values["BATCH_SIZE"], finetune_steps=values["FINETUNE_STEPS"],
                        num_partitions=values["num_partitions"], initial_checkpoint=values["INITIAL_CHECKPOINT_PATH"])


def t5x_dataset(dataset: str) -> str:
    """gin/t5x/datasets/{D}.gin: the sequence lengths every experiment on D shares."""
    setting = DATASETS[dataset]
    return "\n".join([
        f"# Sequence lengths for {dataset}; included by gin/t5x/experiments/{dataset}_*.gin.", "#",
        "# Not run on its own, e.g.",
        f"#   python -m t5x.train --gin_file=gin/t5x/experiments/{dataset}_dsbs_base.gin --gin.MODEL_DIR=\\\"gs://BUCKET/...\\\"",
        f"# {GENERATED}", "# Expected runtime: stated in each experiment file.", "#",
        f"# Why {setting.inputs}/{setting.targets} (the reference truncates at 1024/256): {setting.why}.",
        "# Examples are not packed, so every token of these lengths is computed: keep them tight.", "",
        f"TASK_FEATURE_LENGTHS = {{\"inputs\": {setting.inputs}, \"targets\": {setting.targets}}}"]) + "\n"


def _gin_value(value) -> str:
    return "None" if value is None else repr(value)


def generated_files() -> Dict[pathlib.Path, str]:
    """Every generated path (absolute) -> its content."""
    files: Dict[pathlib.Path, str] = {}
    for e in experiments():
        files[GIN_DIR / "experiments" / f"{e.name}.gin"] = embedded_experiment(e)
        files[GIN_DIR / "t5x" / "experiments" / f"{e.name}.gin"] = t5x_experiment(e)
        method = methods.get(e.method)
        eval_path = GIN_DIR / "t5x" / "experiments" / f"{eval_config_name(e.dataset, method, e.size)}.gin"
        files[eval_path] = t5x_eval(e.dataset, method.eval_variant, e.size)
    for dataset in DATASETS:
        files[GIN_DIR / "t5x" / "datasets" / f"{dataset}.gin"] = t5x_dataset(dataset)
    return files


GENERATED_DIRS = (GIN_DIR / "experiments", GIN_DIR / "t5x" / "experiments", GIN_DIR / "t5x" / "datasets")


def differences() -> Tuple[List[pathlib.Path], List[pathlib.Path]]:
    """(files whose content differs or that are missing, stale files the generator does not write)."""
    files = generated_files()
    changed = [p for p, text in sorted(files.items()) if not p.exists() or p.read_text() != text]
    stale = sorted(p for d in GENERATED_DIRS for p in d.glob("*.gin") if p not in files)
    return changed, stale


def write() -> int:
    files = generated_files()
    _, stale = differences()
    for path in stale:
        path.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return len(files)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsbs_jax.gin_gen", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite the generated gin files")
    group.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = parser.parse_args(argv)
    if args.write:
        print(f"wrote {write()} gin files under {os.path.relpath(GIN_DIR)}/")
        return 0
    changed, stale = differences()
    for path in changed:
        print(f"differs from the generator: {os.path.relpath(path)}")
    for path in stale:
        print(f"not generated (stale): {os.path.relpath(path)}")
    if changed or stale:
        print("run `python -m dsbs_jax.gin_gen --write` and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
