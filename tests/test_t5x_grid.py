"""`dsbs sweep --emit t5x` without running T5X: the step arithmetic, the paper's defaults, the checks.

The emitted configs are run by real T5X in tests/test_t5x_rehearsal.py (and checked against seqio's
vocabulary equality in tests/test_t5x_vocab.py); here they are read with gin's parser.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest
from gin import config_parser

from dsbs_jax import gin_gen, methods
from dsbs_jax.data import schema, tfrecords
from dsbs_jax.data.vocab import DEFAULT_SPM_PATH
from dsbs_jax.experiments import t5x_grid, tpu_fit
from dsbs_jax.models import checkpoints
from dsbs_jax.models.config import t5_1_1_config

sys.path.insert(0, os.path.dirname(__file__))
from test_cli_faults import assert_one_error_line, run_cli, tree_hashes  # noqa: E402

PUBLIC_STEP = 1_000_000


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("grid_data")
    for split in ("train", "valid", "test"):
        examples = [schema.Example(id=f"{split}{i}", dataset="cqa", split=split, input=f"q {i}", label="bank",
                                   teacher_label="bank", rationales=("because.",)) for i in range(4)]
        tfrecords.write_split(str(root / "cqa"), split, examples, num_shards=1, manifest_extra={})
    return root


class _Literals(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name, evaluate):
        return scoped_name

    def macro(self, name):
        return name


def settings(path: pathlib.Path) -> dict:
    """The bindings a gin file sets itself (not its includes): name -> value."""
    out = {}
    for statement in config_parser.ConfigParser(path.read_text(), _Literals()):
        if isinstance(statement, config_parser.BindingStatement):
            out[statement.arg_name or statement.selector] = statement.value
    return out


def emit(data_root, out, **overrides) -> t5x_grid.Grid:
    config = dict(dataset="cqa", data_root=str(data_root), out=str(out), methods=("standard", "dsbs", "single"),
                  fractions=(25.0, 100.0), seeds=(0,), sizes=("base",))
    return t5x_grid.emit(t5x_grid.EmitConfig(**{**config, **overrides}), log=lambda _: None)


def test_public_checkpoint_default_trains_past_its_step_with_the_papers_settings(data_root, tmp_path):
    grid = emit(data_root, tmp_path / "grid", sizes=("base", "xxl"))
    assert len(grid.runs) == 2 * 2 * 3
    for run in grid.runs:
        values = settings(tmp_path / "grid" / run.train_gin)
        size = gin_gen.size_settings(run.size)
        assert values["INITIAL_CHECKPOINT_PATH"] == size.initial_checkpoint.replace("1000000", str(PUBLIC_STEP))
        assert values["PRETRAINED_STEPS"] == PUBLIC_STEP == run.first_step
        # The paper: batch 64 x 10,000 steps; XXL 32 x 4,000. T5X's total_steps counts from the checkpoint.
        expected = (32, 4_000) if run.size == "xxl" else (64, 10_000)
        assert (values["BATCH_SIZE"], values["FINETUNE_STEPS"]) == expected
        assert values["TRAIN_STEPS"] == PUBLIC_STEP + expected[1] == run.final_step
        assert values["TASK_FEATURE_LENGTHS"] == {"inputs": gin_gen.DATASETS["cqa"].inputs,
                                                  "targets": gin_gen.DATASETS["cqa"].targets}
        assert values["num_partitions"] == size.num_partitions
        assert values["VOCAB_PATH"] == DEFAULT_SPM_PATH and values["VOCAB_EXTRA_IDS"] == 100
        assert values["RANDOM_SEED"] == run.seed
        method = methods.get(run.method)
        assert values["MIXTURE_OR_TASK_NAME"] == method.train_task("cqa", run.fraction)
        assert values["EVAL_MIXTURE_OR_TASK_NAME"] == method.eval_task("cqa")
        eval_values = settings(tmp_path / "grid" / run.eval_gin)
        assert eval_values["MIXTURE_OR_TASK_NAME"] == method.eval_task("cqa")
        assert eval_values["split"] == "test" and eval_values["VOCAB_PATH"] == DEFAULT_SPM_PATH
    saved = t5x_grid.read_grid(str(tmp_path / "grid"))
    assert saved == grid and saved.data_root == str(data_root)
    commands = (tmp_path / "grid" / "commands.sh").read_text()
    assert commands.count("python -m t5x.train") == commands.count("python -m t5x.eval") == len(grid.runs)
    assert f"checkpoint_{PUBLIC_STEP + 10_000}" in commands
    assert os.access(tmp_path / "grid" / "run_all.sh", os.X_OK)


def test_learning_rate_decays_from_the_first_finetuning_step(data_root, tmp_path):
    """AdamW's schedule counts fine-tuning steps; the logged one is the same, offset by the checkpoint's step."""
    finetune = (pathlib.Path(gin_gen.GIN_DIR) / "t5x" / "finetune.gin").read_text()
    values = {}
    for statement in config_parser.ConfigParser(finetune, _Literals()):
        if isinstance(statement, config_parser.BindingStatement):
            values[(statement.scope, statement.selector, statement.arg_name)] = statement.value
    for scope in ("optimizer", "logged"):
        assert values[(scope, "optax.linear_schedule", "init_value")] == "LEARNING_RATE"
        assert values[(scope, "optax.linear_schedule", "end_value")] == 0.0
        assert values[(scope, "optax.linear_schedule", "transition_steps")] == "FINETUNE_STEPS"
    assert values[("logged", "optax.linear_schedule", "transition_begin")] == "PRETRAINED_STEPS"
    assert values[("", "optax.adamw", "learning_rate")] == "optimizer/optax.linear_schedule"


def test_flags_override_the_defaults_and_from_scratch_starts_at_zero(data_root, tmp_path):
    grid = emit(data_root, tmp_path / "grid", sizes=("small",), from_scratch=True, finetune_steps=777,
                batch_size=48, lengths={"inputs": 320, "targets": 96}, learning_rate=3e-4, num_partitions=2)
    values = settings(tmp_path / "grid" / grid.runs[0].train_gin)
    assert values["INITIAL_CHECKPOINT_PATH"] is None and values["PRETRAINED_STEPS"] == 0
    assert (values["FINETUNE_STEPS"], values["TRAIN_STEPS"], values["BATCH_SIZE"]) == (777, 777, 48)
    assert values["TASK_FEATURE_LENGTHS"] == {"inputs": 320, "targets": 96}
    assert values["LEARNING_RATE"] == 3e-4 and values["num_partitions"] == 2


def test_a_local_checkpoint_gives_its_own_step(data_root, tmp_path):
    """The step comes from the checkpoint's state, not from an assumption (here 123,456)."""
    import jax

    from dsbs_jax.models import network

    params = network.init_params(t5_1_1_config("tiny", vocab_size=128), jax.random.PRNGKey(0))
    path = checkpoints.save_t5x_checkpoint(params, str(tmp_path / "pre"), 123_456, min_dim_size_to_factor=16)
    assert checkpoints.checkpoint_step(path) == 123_456
    grid = emit(data_root, tmp_path / "grid", sizes=("small",), initial_checkpoint=path, spm_path=DEFAULT_SPM_PATH,
                finetune_steps=50)
    assert {(r.first_step, r.final_step, r.initial_checkpoint) for r in grid.runs} == {(123_456, 123_506, path)}
    # A checkpoint whose name and state disagree is refused rather than trusted.
    os.rename(path, tmp_path / "pre" / "checkpoint_99")
    with pytest.raises(t5x_grid.GridError, match="name says step 99 but its state holds step 123456"):
        emit(data_root, tmp_path / "grid2", sizes=("small",), initial_checkpoint=str(tmp_path / "pre" / "checkpoint_99"))


def sweep_cli(argv, capsys) -> tuple[int, str]:
    """`dsbs sweep ARGV` in this process: (exit status, its one `dsbs sweep: error:` line)."""
    from dsbs_jax.experiments import sweep

    code = sweep.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured.err[-3000:]
    errors = [line for line in captured.err.splitlines() if line.startswith("dsbs sweep: error: ")]
    assert len(errors) == (1 if code else 0), captured.err[-3000:]
    return code, errors[0] if errors else ""


@pytest.mark.parametrize("bad, fragment", [
    ("missing", "does not exist"),
    ("not_a_checkpoint", "is not a T5X checkpoint"),
    ("gs://bucket/models/t5", "name the T5X checkpoint_N directory"),
])
def test_a_bad_initial_checkpoint_is_one_line_exit_2_and_writes_nothing(data_root, tmp_path, capsys, bad, fragment):
    (tmp_path / "not_a_checkpoint").mkdir()
    (tmp_path / "not_a_checkpoint" / "notes.txt").write_text("hello")
    path = bad if bad.startswith("gs://") else str(tmp_path / bad)
    before = tree_hashes(tmp_path)
    code, error = sweep_cli(["--emit", "t5x", "--dataset", "cqa", "--data_root", str(data_root), "--out",
                             str(tmp_path / "grid"), "--sizes", "base", "--initial_checkpoint", path,
                             "--spm_path", DEFAULT_SPM_PATH], capsys)
    assert code == 2 and "--initial_checkpoint" in error and fragment in error, error
    assert tree_hashes(tmp_path) == before and not (tmp_path / "grid").exists()


def test_the_real_command_line_reports_a_bad_checkpoint_in_one_line(data_root, tmp_path):
    """The same through `python -m dsbs_jax.cli` (the `dsbs` entry point), from another directory."""
    result = run_cli(["sweep", "--emit", "t5x", "--dataset", "cqa", "--data_root", str(data_root), "--out",
                      str(tmp_path / "grid"), "--initial_checkpoint", str(tmp_path / "nope" / "checkpoint_7")])
    assert result.returncode == 2, result.stderr[-2000:]
    assert_one_error_line(result, "dsbs sweep", "--initial_checkpoint", "does not exist")
    assert not (tmp_path / "grid").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--sizes", "mini"], "--sizes mini: --emit t5x trains the public T5 1.1 sizes only"),
    (["--sizes", "base,large", "--initial_checkpoint", "gs://b/checkpoint_5"], "emit one grid per size"),
    (["--optimizer", "adafactor"], "AdamW"),
    (["--tpu", "v4-8", "--sizes", "xl", "--num_partitions", "1"], "xl"),  # AdamW replicated: does not fit
    (["--tpu", "v4-32", "--batch_size", "20"], "does not divide over the 16-way data-parallel mesh"),
    (["--tpu", "v9-8"], "expected an accelerator type"),
    (["--inputs_length", "64"], "--inputs_length and --targets_length go together"),
])
def test_emit_refusals(data_root, tmp_path, capsys, argv, fragment):
    code, error = sweep_cli(["--emit", "t5x", "--dataset", "cqa", "--data_root", str(data_root), "--out",
                             str(tmp_path / "grid"), *argv], capsys)
    assert code == 2 and fragment in error, error
    assert not (tmp_path / "grid").exists()


def test_the_public_checkpoints_refuse_a_local_vocabulary(data_root, tmp_path, spm_model):
    """Tasks tokenizing with a `--train_vocab` model cannot feed T5's checkpoints (their embedding is T5's);
    a from-scratch model gets an embedding of the vocabulary's size, not T5's 32128."""
    with pytest.raises(t5x_grid.GridError, match="need T5's vocabulary"):
        emit(data_root, tmp_path / "grid", spm_path=spm_model)
    grid = emit(data_root, tmp_path / "grid", spm_path=spm_model, from_scratch=True)
    assert (grid.vocab_path, grid.vocab_extra_ids, grid.model_vocab_size) == (spm_model, 0, 512)
    assert grid.environment()["DSBS_SPM_PATH"] == grid.vocab_path
    for run in grid.runs:
        for path in (run.train_gin, run.eval_gin):
            assert settings(tmp_path / "grid" / path)["vocab_size"] == 512


def test_extra_gin_files_may_not_move_the_step_arithmetic(data_root, tmp_path):
    extra = tmp_path / "extra.gin"
    extra.write_text("EVAL_PERIOD = 5\nTRAIN_STEPS = 10\n")
    with pytest.raises(t5x_grid.GridError, match=r"extra.gin:2: TRAIN_STEPS is set by the grid"):
        emit(data_root, tmp_path / "grid", extra_gin_files=(str(extra),))
    extra.write_text("EVAL_PERIOD = 5\n")
    grid = emit(data_root, tmp_path / "grid", extra_gin_files=(str(extra),))
    assert (tmp_path / "grid" / "gin" / "extra" / "extra.gin").read_text() == "EVAL_PERIOD = 5\n"
    for run in grid.runs:  # included last by both configs
        for path in (run.train_gin, run.eval_gin):
            assert (tmp_path / "grid" / path).read_text().rstrip().endswith("include 'extra/extra.gin'")


def test_re_emitting_a_different_grid_into_the_same_out_is_refused(data_root, tmp_path):
    emit(data_root, tmp_path / "grid")
    emit(data_root, tmp_path / "grid")  # the same grid again: fine
    with pytest.raises(t5x_grid.GridError, match="already holds a different grid"):
        emit(data_root, tmp_path / "grid", seeds=(1,))
    assert emit(data_root, tmp_path / "grid", seeds=(1,), overwrite=True).runs[0].seed == 1


def test_memory_estimate_the_user_report():
    """XL with AdamW replicated (num_partitions=1) cannot fit a 32 GB chip: parameters, two moments and
    gradients alone are 4 x 11.4 GB (a T5X user's "Used 63.80G of 30.75G hbm")."""
    slice_ = tpu_fit.tpu_slice("v4-8")
    assert (slice_.devices, slice_.hbm_gib) == (4, 32)
    xl = tpu_fit.estimate(t5_1_1_config("xl"), batch_size=64, lengths={"inputs": 256, "targets": 128},
                          num_partitions=1, paired=False, tpu=slice_)
    assert xl.params == pytest.approx(2_849_757_184 * 4) and xl.optimizer == 2 * xl.params
    assert not xl.fits and xl.params + xl.optimizer + xl.gradients > 32 * tpu_fit.GiB
    split = tpu_fit.estimate(t5_1_1_config("xl"), batch_size=64, lengths={"inputs": 256, "targets": 128},
                             num_partitions=4, paired=False, tpu=tpu_fit.tpu_slice("v4-32"))
    assert split.params < xl.params / 3.9 and split.fits  # sharded 4 ways over 'model'
    assert tpu_fit.tpu_slice("v5litepod-16").devices == 16 and tpu_fit.tpu_slice("v4-32").devices == 16


def test_docs_memory_table_is_current():
    """docs/tpu.md's table is what `python -m dsbs_jax.experiments.tpu_fit` prints today."""
    docs = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "tpu.md").read_text()
    assert tpu_fit.paper_table() in docs, "regenerate the table: python -m dsbs_jax.experiments.tpu_fit"


def test_collect_lists_missing_and_unfinished_runs(data_root, tmp_path):
    """Never dropped: a run with metrics is tabled, one with only a checkpoint or nothing is listed."""
    from dsbs_jax.experiments import t5x_collect

    grid = emit(data_root, tmp_path / "grid", methods=("standard", "dsbs"), fractions=(100.0,), seeds=(0, 1))
    done, partial = grid.runs[0], grid.runs[1]
    metrics = pathlib.Path(grid.eval_metrics_file(done))
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"step": done.final_step, "accuracy": 61.5}) + "\n")
    (pathlib.Path(partial.model_dir) / f"checkpoint_{partial.first_step + 3000}").mkdir(parents=True)
    rows = t5x_collect.collect(str(tmp_path / "grid"), log=lambda _: None)
    assert [r["status"] for r in rows] == ["finished", "unfinished", "missing", "missing"]
    table = (tmp_path / "grid" / "results.md").read_text()
    assert "61.5" in table and "latest checkpoint_1003000 of 1010000" in table
    assert sum(f"- {r.name}: missing" in table for r in grid.runs) == 2
    saved = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert len(saved["runs"]) == 1 and len(saved["unfinished"]) == 3


def test_every_method_is_scored_on_a_task_with_metric_functions(tmp_path):
    """T5X would skip inference eval of a task without metrics: every method's gold-label task has them."""
    import seqio

    import tasks

    for split in ("train", "valid", "test"):
        tfrecords.write_split(str(tmp_path / "cqa"), split, [schema.Example(
            id=f"{split}0", dataset="cqa", split=split, input="q", label="bank", teacher_label="bank",
            rationales=("r",))], num_shards=1)
    tasks.register_dataset_tasks("cqa_metrics_check", str(tmp_path / "cqa"), vocabulary=seqio.PassThroughVocabulary(8))
    try:
        for method in methods.METHODS.values():
            task = seqio.get_mixture_or_task(method.eval_task("cqa_metrics_check"))
            assert task.metric_fns, f"{method.name} is scored on {task.name}, which has no metric functions"
    finally:
        tasks.remove_dataset_tasks("cqa_metrics_check")


def test_the_tasks_vocabulary_equals_seqio_s_by_seqio_s_own_comparison():
    """T5X compares its model's plain seqio vocabulary with the task's by `==`, in both orders; our subclass's
    notes (why the file was chosen) must not enter it. Broken variant: an `origin` attribute in the state
    seqio compares made them unequal, and T5X refused to train."""
    import seqio

    from tasks import vocab

    ours = vocab.get_vocabulary("/models/spm.model", origin="the dataset's own")
    for plain, equal in ((seqio.SentencePieceVocabulary("/models/spm.model", extra_ids=0), True),
                         (seqio.SentencePieceVocabulary("/models/spm.model", extra_ids=100), False),
                         (seqio.SentencePieceVocabulary("/copy/spm.model", extra_ids=0), False)):
        assert (ours == plain, plain == ours, ours != plain) == (equal, equal, not equal)
    assert ours.origin == "the dataset's own"
