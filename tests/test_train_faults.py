"""Bad configurations of `dsbs train`, `dsbs eval`, `dsbs predict` and `dsbs sweep`, run as a user would.

Each case runs the real CLI in a subprocess and asserts: the exit code, a one-line message naming
the flag/file/field, no traceback, and that every pre-existing output file is byte-identical.
Plus the happy paths that used to fail: relative paths from another working directory.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from typing import Callable, List, Optional

import pytest

import synthetic_letters
from test_cli_faults import assert_one_error_line, assert_unchanged, tree_hashes

STEPS = synthetic_letters.TRAIN_STEPS


@pytest.fixture(scope="module")
def world(tmp_path_factory, letters_root, letters_run):
    """The session's letters data root and finished `dsbs train` run of the dsbs method
    (`synthetic_letters.train_flags`), and a directory for this module's own outputs."""
    root = tmp_path_factory.mktemp("faults")
    data, spm = letters_root
    (root / "in.jsonl").write_text("".join(json.dumps({"input": e.input}) + "\n"
                                           for e in synthetic_letters.make_examples("valid", 8, 1)))
    return {"root": root, "data": data, "env": synthetic_letters.dsbs_env(data, spm), "run": letters_run,
            "spm": spm}


def _train_flags(model_dir, *extra: str) -> List[str]:
    return synthetic_letters.train_flags(model_dir, *extra)


def _dsbs(argv, env, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsbs_jax.cli", *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[dict], List[str]]
    message: str
    code: int = 2
    check: Optional[Callable[[dict], None]] = None  # more assertions on the world after the run


def _nothing_trained(run: pathlib.Path) -> None:
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    assert not (run / "metrics.jsonl").exists()  # not a single step ran


CASES = [
    Case("train: eval split the data lacks, found before step 1",
         lambda w: ["train", *_train_flags(w["root"] / "never_trained", "--gin.EVAL_SPLIT='dev'")],
         "EVAL_SPLIT", check=lambda w: _nothing_trained(w["root"] / "never_trained")),
    Case("train: resume with another model size",
         lambda w: ["train", *_train_flags(w["run"], "--gin.MODEL_SIZE='small'", f"--gin.TRAIN_STEPS={STEPS + 3}")],
         "model.emb_dim:"),
    Case("train: resume with another vocabulary size",
         lambda w: ["train", *_train_flags(w["run"], "--gin.VOCAB_SIZE=64", f"--gin.TRAIN_STEPS={STEPS + 3}")],
         "ALLOW_CONFIG_CHANGE"),
    Case("train: resume with another method",
         lambda w: ["train", *_train_flags(w["run"], "--gin.METHOD='standard'", f"--gin.TRAIN_STEPS={STEPS + 3}")],
         "method: 'dsbs' -> 'standard'"),
    Case("train: unknown method", lambda w: ["train", *_train_flags(w["root"] / "r2", "--gin.METHOD='dsbs_paired'")],
         "Unknown method 'dsbs_paired'"),
    Case("train: method and task disagree",
         lambda w: ["train", *_train_flags(w["root"] / "r3", "--gin.MIXTURE_OR_TASK_NAME='letters_standard_gold'")],
         "not of METHOD='dsbs'"),
    Case("train: pack a paired method", lambda w: ["train", *_train_flags(w["root"] / "r4", "--gin.PACK=True")],
         "cannot be packed"),
    Case("eval: checkpoint path that does not exist",
         lambda w: ["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH={w['root'] / 'nowhere'}"],
         "does not exist"),
    Case("predict: output directory not writable",
         lambda w: ["predict", "--checkpoint", str(w["run"]), "--input", str(w["root"] / "in.jsonl"),
                    "--output", str(w["root"] / "in.jsonl" / "out.jsonl")], "in.jsonl is a file"),
    Case("predict: --method contradicts the run's",
         lambda w: ["predict", "--checkpoint", str(w["run"]), "--input", str(w["root"] / "in.jsonl"),
                    "--output", str(w["root"] / "p1.jsonl"), "--method", "standard"], "not --method standard"),
    Case("predict: missing input", lambda w: ["predict", "--checkpoint", str(w["run"]), "--input",
                                              str(w["root"] / "missing.jsonl"), "--output", str(w["root"] / "p2.jsonl")],
         "missing.jsonl: no such file"),
    Case("sweep: unknown method", lambda w: ["sweep", "--dataset", "letters", "--data_root", str(w["data"]),
                                             "--out", str(w["root"] / "sweep"), "--methods", "standard,dsbs_gold"],
         "Unknown method(s) ['dsbs_gold']"),
    Case("sweep: missing data root", lambda w: ["sweep", "--dataset", "letters", "--data_root",
                                                str(w["root"] / "no_data"), "--out", str(w["root"] / "sweep2")],
         "no letters/manifest.json"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_configuration(world, case):
    watched = (world["root"], world["data"], world["run"])
    before = tree_hashes(*watched)
    result = _dsbs(case.argv(world), world["env"])
    assert result.returncode == case.code, (result.stdout + result.stderr)[-3000:]
    assert_one_error_line(result, "dsbs ", case.message)
    assert_unchanged(before, tree_hashes(*watched), creates_nothing=False)
    if case.check:
        case.check(world)


def test_relative_paths_from_another_directory(world, tmp_path):
    """`--gin.CHECKPOINT_PATH=run` (relative) evaluates; predict works from another directory."""
    root = world["root"]
    assert world["run"].name == "run"
    result = _dsbs(["eval", "--gin_file=runs/eval.gin", "--gin.CHECKPOINT_PATH=run", "--gin.EVAL_SPLIT='test'",
                    f"--gin.EVAL_OUTPUT_DIR={tmp_path / 'eval'}", "--gin.MIXTURE_OR_TASK_MODULE=tasks"],
                   world["env"], cwd=world["run"].parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval/letters_label_gold/accuracy" in json.loads(result.stdout)
    record = json.loads((world["run"] / "dsbs_run.json").read_text())
    assert os.path.isabs(record["vocabulary"]["sentencepiece_model_file"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _dsbs(["predict", "--checkpoint", os.path.relpath(world["run"], elsewhere), "--input",
                    os.path.relpath(root / "in.jsonl", elsewhere), "--output", "out.jsonl", "--rationale"],
                   world["env"], cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (elsewhere / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all("prediction" in r and "rationale" in r for r in rows)


def test_allow_config_change_resumes_another_task(world, tmp_path):
    """--gin.ALLOW_CONFIG_CHANGE=True resumes a run with another method (same model)."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(world["run"], run)
    result = _dsbs(["train", *_train_flags(run, "--gin.METHOD='standard'", f"--gin.TRAIN_STEPS={STEPS + 2}",
                                           "--gin.ALLOW_CONFIG_CHANGE=True", "--gin.EVAL_PERIOD=-1")], world["env"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "dsbs_run.json").read_text())["method"] == "standard"
