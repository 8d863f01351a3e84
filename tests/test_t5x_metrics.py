"""A metric that raises must fail a real T5X run loudly, not vanish.

T5X computes inference-eval metrics in a background future by default (`concurrent_metrics=True`)
and never raises its errors; a task without metric functions silently drops inference eval. Our
gin/t5x/finetune.gin sets `concurrent_metrics = False`, so the metric's exception stops t5x.train;
and run_all.sh fails a run whose training left no inference-eval metrics at its final step, which
catches both cases even under T5X's default. Deliberately broken variants, both run here: a
re-registered `same_label_gold` whose metric raises; and that with `concurrent_metrics=True`.
"""
from __future__ import annotations

import os
import pathlib

import pytest

pytest.importorskip("t5x")

import synthetic_letters  # noqa: E402
from dsbs_jax.data import schema, tfrecords  # noqa: E402
from dsbs_jax.data.vocab import train_sentencepiece  # noqa: E402
from dsbs_jax.experiments import t5x_grid, t5x_rehearsal  # noqa: E402
from test_t5x_rehearsal import REPO, run_all  # noqa: E402

BROKEN_MODULE = '''"""same_label_gold re-registered with a metric that raises (a test's deliberately broken variant)."""
import seqio
import tasks  # registers same_label_gold from $DSBS_DATA_ROOT first

_original = seqio.get_mixture_or_task("same_label_gold")
seqio.TaskRegistry.remove("same_label_gold")


def broken_metric(targets, predictions):
    raise RuntimeError("deliberately broken metric")


seqio.TaskRegistry.add("same_label_gold", source=_original.source, output_features=_original.output_features,
                       preprocessors=_original.preprocessors, postprocess_fn=_original.postprocessor,
                       metric_fns=[broken_metric])
'''


@pytest.fixture(scope="module")
def grid_factory(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5x_metrics")
    spm = train_sentencepiece(synthetic_letters.vocab_texts(), str(root / "spm"), vocab_size=64)
    for split, n in (("train", 16), ("valid", 4), ("test", 4)):
        examples = [schema.Example(id=f"{split}{i}", dataset="same", split=split, input="4 k 9 1", label="k",
                                   teacher_label="k", rationales=("k is the letter",)) for i in range(n)]
        tfrecords.write_split(str(root / "data" / "same"), split, examples, num_shards=1)
    checkpoint = t5x_rehearsal.write_pretrained_checkpoint(str(root / "pretrained"), vocab_size=128)
    (root / "modules").mkdir()
    (root / "modules" / "broken_metric_tasks.py").write_text(BROKEN_MODULE)
    toy = root / "toy_model.gin"
    toy.write_text(t5x_rehearsal.toy_model_gin(128, num_partitions=1, eval_period=2, checkpoint_period=2))
    broken = root / "broken_metric.gin"
    broken.write_text("from __gin__ import dynamic_registration\n\nimport broken_metric_tasks\n")

    def make(out: pathlib.Path, methods=("dsbs",), extra=()) -> t5x_grid.Grid:
        return t5x_grid.emit(t5x_grid.EmitConfig(
            dataset="same", data_root=str(root / "data"), out=str(out), methods=methods, fractions=(100.0,),
            seeds=(0,), sizes=("small",), initial_checkpoint=checkpoint, spm_path=spm, finetune_steps=2,
            batch_size=4, lengths={"inputs": 16, "targets": 16}, extra_gin_files=(str(toy), str(broken), *extra)),
            log=lambda _: None)

    return make, root / "modules"


def _run(grid_dir, work, modules):
    env_path = os.pathsep.join([str(modules), str(REPO)])
    # The metric runs during training's inference eval; the test split's t5x.eval would add nothing here.
    proc = run_all(grid_dir, work, "--devices_per_process", "1", "--train_only",
                   env={**os.environ, "PYTHONPATH": env_path})
    output, _ = proc.communicate(timeout=900)
    return proc.returncode, output


def test_a_broken_metric_fails_its_run_and_the_next_run_still_runs(grid_factory, tmp_path):
    """dsbs is scored on the broken same_label_gold and fails loudly; standard (same_standard_gold) then
    trains anyway, and the summary and exit status name the failure."""
    make, modules = grid_factory
    grid = make(tmp_path / "grid", methods=("dsbs", "standard"))
    code, output = _run(tmp_path / "grid", tmp_path / "work", modules)
    assert code == 1, output[-3000:]
    failed = [line for line in output.splitlines() if line.startswith("  FAILED ")]
    assert len(failed) == 1 and failed[0].startswith(f"  FAILED {grid.runs[0].name}: training: exit 1"), output[-3000:]
    assert "Failed to evaluate task same_label_gold: deliberately broken metric" in failed[0]
    assert "1 finished, 0 skipped (finished earlier), 1 failed" in output
    assert f"[2/2] {grid.runs[1].name}: trained to step 1000002" in output


def test_with_t5x_default_concurrent_metrics_the_runner_still_fails_it(grid_factory, tmp_path):
    """T5X's default swallows the error (t5x.train exits 0); the missing metrics line gives it away."""
    make, modules = grid_factory
    default = tmp_path / "t5x_default_concurrent_metrics.gin"
    default.write_text("from __gin__ import dynamic_registration\n\nimport __main__ as train_script\n\n"
                       "train_script.train.concurrent_metrics = True\n")
    make(tmp_path / "grid", extra=(str(default),))
    code, output = _run(tmp_path / "grid", tmp_path / "work", modules)
    assert code == 1, output[-3000:]
    failed = [line for line in output.splitlines() if line.startswith("  FAILED ")]
    assert len(failed) == 1 and "t5x.train exited 0 but evaluated no same_label_gold at step 1000002" in failed[0]
