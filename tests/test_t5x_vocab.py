"""The emitted T5X configs' model vocabulary equals every task's, as T5X itself compares them.

Since late 2024 seqio's `SentencePieceVocabulary.__eq__` compares the model file's path string and
the extra ids, so `cc_all.32000` + 100 extra ids differs from `cc_all.32000.100extra` + 0, and a
local copy differs from its gs:// original; T5X then refuses to train ("Model and Task vocabularies
do not match", `t5x.utils.verify_matching_vocabs`). For every T5 1.1 size and dataset, each emitted
train and eval config is parsed by gin as t5x.train / t5x.eval would, its MODEL is built, and T5X's
own comparison runs against the training and evaluation tasks that `import tasks` registers with the
grid's environment. The broken variants (T5X's model gin's `cc_all.32000.100extra` with no extra
ids, and a local copy of T5's model) must be refused by the same check.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("t5x")

from dsbs_jax import gin_gen, methods  # noqa: E402
from dsbs_jax.data import schema, tfrecords  # noqa: E402
from dsbs_jax.experiments import t5x_grid  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]

_CHECK = """
import json, sys
jobs = json.loads(sys.argv[1])
import importlib
entry = importlib.import_module(jobs["entry"])
sys.modules["__main__"] = entry  # the run configs `import __main__ as train_script`
import os
import gin
import t5x
from t5x import utils
T5X_ROOT = os.path.dirname(os.path.dirname(t5x.__file__))
results = {}
for job in jobs["configs"]:
    gin.clear_config(clear_constants=True)
    for path in job["search_paths"] + [T5X_ROOT]:
        gin.add_config_file_search_path(path)
    gin.parse_config_files_and_bindings([job["gin_file"]], job["bindings"], finalize_config=False)
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    outcome = []
    for task in job["tasks"]:
        cfg = utils.DatasetConfig(mixture_or_task_name=task, task_feature_lengths=None, split="train", batch_size=1,
                                  shuffle=False, seed=0)
        # T5X's verify_matching_vocabs compares these two with seqio's `!=` (its error message then reads
        # the model file, which needs GCS for T5's vocabulary).
        task_vocabs = utils.get_vocabulary(cfg)
        same = task_vocabs[0] == model.input_vocabulary and task_vocabs[1] == model.output_vocabulary
        outcome.append("match" if same else "mismatch")
    results[job["name"]] = outcome
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("vocab_data")
    for dataset in gin_gen.DATASETS:
        for split in ("train", "valid", "test"):
            examples = [schema.Example(id=f"{split}{i}", dataset=dataset, split=split, input=f"q {i}",
                                       label="entailment", teacher_label="entailment", rationales=("r.",))
                        for i in range(2)]
            tfrecords.write_split(str(root / dataset), split, examples, num_shards=1)
    return root


def check(grids, entry: str, bindings=()) -> dict:
    """{config name: ['match' | 'mismatch', ...] per task}, compared as T5X's verify_matching_vocabs does."""
    configs, env = [], None
    for grid, grid_dir in grids:
        env = {**os.environ, **grid.environment(), "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
        for run in grid.runs:
            gin_file, tasks = ((run.train_gin, [run.train_task, run.eval_task]) if entry == "t5x.train"
                               else (run.eval_gin, [run.eval_task]))
            configs.append({"name": f"{run.name}:{entry}", "gin_file": str(grid_dir / gin_file), "tasks": tasks,
                            "search_paths": t5x_grid.gin_search_paths(str(grid_dir)), "bindings": list(bindings)})
    result = subprocess.run([sys.executable, "-c", _CHECK, json.dumps({"entry": entry, "configs": configs})],
                            env=env, cwd=str(REPO), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):])


@pytest.fixture(scope="module")
def grids(data_root, tmp_path_factory):
    """One grid per dataset: every method on every size (public checkpoints, T5's vocabulary)."""
    out = []
    for dataset in gin_gen.DATASETS:
        grid_dir = tmp_path_factory.mktemp(f"grid_{dataset}")
        grid = t5x_grid.emit(t5x_grid.EmitConfig(
            dataset=dataset, data_root=str(data_root), out=str(grid_dir), methods=tuple(methods.METHODS),
            fractions=(100.0,), seeds=(0,), sizes=gin_gen.SIZES), log=lambda _: None)
        out.append((grid, grid_dir))
    return out


@pytest.mark.parametrize("entry", ["t5x.train", "t5x.eval"])
def test_every_emitted_config_vocabulary_equals_its_tasks(grids, entry):
    results = check(grids, entry)
    assert len(results) == len(gin_gen.DATASETS) * len(methods.METHODS) * len(gin_gen.SIZES)
    bad = {name: outcome for name, outcome in results.items() if set(outcome) != {"match"}}
    assert not bad, bad


@pytest.mark.parametrize("path, extra_ids", [
    ("gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model", 0),  # T5X's model gins' name
    ("/models/t5/sentencepiece.model", 100),  # a local copy of T5's model
])
def test_the_check_refuses_a_vocabulary_that_differs_only_by_name(grids, path, extra_ids):
    grid, grid_dir = grids[0]
    one = (dataclass_replace_runs(grid, grid.runs[:1]), grid_dir)
    results = check([one], "t5x.train", bindings=[f"VOCAB_PATH = {json.dumps(path)}", f"VOCAB_EXTRA_IDS = {extra_ids}"])
    assert list(results.values()) == [["mismatch", "mismatch"]], results


def dataclass_replace_runs(grid: t5x_grid.Grid, runs) -> t5x_grid.Grid:
    import dataclasses

    return dataclasses.replace(grid, runs=tuple(runs))
