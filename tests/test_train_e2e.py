"""End to end: TFRecords -> SeqIO tasks -> trainer (mixture and paired methods) -> seqio.Evaluator -> eval/predict.

A tiny T5 learns the synthetic letters task (tests/synthetic_letters.py; 8 classes, chance 12.5 %)
well above chance in both loss modes, on the 8 fake CPU devices (data-parallel mesh).
"""
import json
import pathlib

import gin
import pytest

import synthetic_letters
from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.train import cli, predict, trainer

CHANCE = 100.0 / len(synthetic_letters.LETTERS)
EVAL_TASK = "letters_label_gold"


@pytest.fixture(scope="module")
def letters(letters_root):
    root, spm = letters_root
    return synthetic_letters.prepare(root, spm), spm


def _config(model_dir, mode, steps, **overrides):
    fields = dict(
        method="dsbs" if mode == "paired" else "dsbs_mixture", dataset="letters",
        task_feature_lengths={"inputs": 24, "targets": 24}, model_dir=str(model_dir), train_steps=steps,
        batch_size=32, model=t5_1_1_config("tiny", vocab_size=128), dropout_rate=0.0, optimizer="adafactor",
        learning_rate=1e-2, eval_period=steps // 2, checkpoint_period=steps // 2, log_period=10, eval_batch_size=32)
    fields.update(overrides)
    return trainer.TrainConfig(**fields)


def _losses(model_dir):
    lines = [json.loads(line) for line in (pathlib.Path(model_dir) / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


@pytest.fixture(scope="module")
def mixture_run(letters, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("mixture")
    return model_dir, trainer.train(_config(model_dir, "mixture", 100))


def test_mixture_mode_learns_the_task(mixture_run):
    model_dir, result = mixture_run
    accuracy = result[f"eval/{EVAL_TASK}/accuracy"]
    assert accuracy >= 60.0 > 2 * CHANCE, result
    losses = _losses(model_dir)
    assert losses[-1] < 0.5 * losses[0]
    assert result["step"] == 100 and result["final_loss"] == pytest.approx(losses[-1], rel=0.5)
    # Evaluated mid-run and at the end; checkpoints at both points; TensorBoard events written.
    evals = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()
             if f"eval/{EVAL_TASK}/accuracy" in line]
    assert [e["step"] for e in evals] == [50, 100]
    assert sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir()) == [50, 100]
    assert list(model_dir.glob("events.out.tfevents.*"))
    record = json.loads((model_dir / "dsbs_run.json").read_text())
    assert (record["method"], record["mixture_or_task_name"], record["eval_tasks"]) == (
        "dsbs_mixture", "letters_dsbs_gold", [EVAL_TASK])
    assert record["input_prefix"] == "predict: " and record["max_decode_length"] == 64


def test_paired_mode_learns_the_task(letters, tmp_path):
    result = trainer.train(_config(tmp_path, "paired", 80))
    assert result[f"eval/{EVAL_TASK}/accuracy"] >= 60.0, result
    record = json.loads((tmp_path / "dsbs_run.json").read_text())
    assert (record["method"], record["mixture_or_task_name"]) == ("dsbs", "letters_paired_gold")
    assert record["loss"]["alpha"] == 0.5 and record["loss"]["z_loss"] == 0.0
    losses = _losses(tmp_path)
    assert losses[-1] < 0.5 * losses[0]
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert {"label/loss", "rationale/loss", "label/tokens", "rationale/tokens"} <= set(line)


def test_eval_and_predict_reuse_the_trained_model(letters, mixture_run, tmp_path, capsys):
    model_dir, result = mixture_run
    gin.clear_config()
    # No task named: `dsbs eval` scores the task the run's method is scored on.
    rc = cli.eval_main(["--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH={model_dir}",
                        f"--gin.EVAL_OUTPUT_DIR={tmp_path / 'eval'}"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out[f"eval/{EVAL_TASK}/accuracy"] == pytest.approx(result[f"eval/{EVAL_TASK}/accuracy"])
    assert out["step"] == 100
    # dsbs predict on the validation inputs reproduces the evaluator's accuracy.
    examples = synthetic_letters.make_examples("valid", synthetic_letters.SPLIT_SIZES["valid"], 1)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": e.input, "gold": e.label}) + "\n" for e in examples))
    dst = tmp_path / "out.jsonl"
    assert predict.main(["--checkpoint", str(model_dir), "--input", str(src), "--output", str(dst),
                         "--rationale", "--input_field", "text"]) == 0
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(rows) == len(examples) and all("rationale" in r and "prediction" in r for r in rows)
    accuracy = 100.0 * sum(r["prediction"] == r["gold"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(result[f"eval/{EVAL_TASK}/accuracy"])
    assert sum(r["rationale"].startswith("the letter among") for r in rows) >= len(rows) // 2
    assert predict.main(["--checkpoint", str(model_dir), "--input", str(src), "--output", str(dst),
                         "--input_field", "question"]) == 2
    assert "expected an object with a string field 'question'" in capsys.readouterr().err


def test_empty_dataset_is_a_clear_error(letters, tmp_path):
    import tasks
    from dsbs_jax.data import tfrecords
    from dsbs_jax.train import input_pipeline

    # A real dataset directory whose train split has no examples (valid/test do).
    for split, n in (("train", 0), ("valid", 4), ("test", 4)):
        tfrecords.write_split(str(tmp_path / "hollow"), split, synthetic_letters.make_examples(split, n, 0))
    _, spm = letters
    tasks.register_dataset_tasks("hollow", str(tmp_path / "hollow"), vocabulary=tasks.get_vocabulary(spm),
                                 fractions=(100.0,))
    try:
        with pytest.raises(input_pipeline.DataError, match="'hollow_dsbs_gold' yielded no examples"):
            trainer.train(_config(tmp_path / "run", "mixture", 4, dataset="hollow", eval_period=-1))
    finally:
        tasks.remove_dataset_tasks("hollow")


def test_initial_checkpoint_path_loads_t5x_and_rejects_junk(letters, tmp_path):
    import jax
    import numpy as np

    from dsbs_jax.models import checkpoints, network
    from dsbs_jax.train import inference
    from dsbs_jax.train.checkpointing import CheckpointError

    config = t5_1_1_config("tiny", vocab_size=128)
    params = jax.device_get(network.unbox_params(
        jax.jit(lambda rng: network.init_params(config, rng))(jax.random.PRNGKey(7))))
    checkpoints.save_t5x_checkpoint(params, str(tmp_path / "t5x"), 1000)
    # Learning rate 0: the run's final params must be exactly the T5X checkpoint's.
    trainer.train(_config(tmp_path / "run", "mixture", 2, initial_checkpoint_path=str(tmp_path / "t5x"),
                          learning_rate=0.0, eval_period=-1, checkpoint_period=2))
    restored = inference.load_for_inference(str(tmp_path / "run"))[0]
    flat = jax.tree_util.tree_leaves_with_path(params)
    assert len(flat) > 20
    for path, leaf in flat:
        got = restored
        for key in path:
            got = got[key.key]
        np.testing.assert_array_equal(np.asarray(got), leaf)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match=r"INITIAL_CHECKPOINT_PATH=.*junk.* cannot be loaded"):
        trainer.train(_config(tmp_path / "run2", "mixture", 2, initial_checkpoint_path=str(tmp_path / "junk"),
                              eval_period=-1))
