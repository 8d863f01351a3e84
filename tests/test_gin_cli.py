"""Every gin file of the embedded trainer parses with its required macros bound; bad gin is a clear error."""
import pathlib

import gin
import pytest

from dsbs_jax import gin_utils
from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.train import cli, evaluation, trainer

GIN = gin_utils.GIN_DIR
REQUIRED = ["--gin.MIXTURE_OR_TASK_NAME=some_task", "--gin.MODEL_DIR=/tmp/x",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", "--gin.TRAIN_STEPS=7"]


def _parse(argv):
    gin_utils.parse(gin_utils.parse_flags(argv))


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


@pytest.mark.parametrize("size", ["tiny", "small", "base", "large", "xl", "xxl"])
def test_model_files_set_t5_1_1_sizes(size):
    _parse([f"--gin_file=models/{size}.gin", "--gin_file=runs/finetune.gin", *REQUIRED])
    config = trainer.TrainConfig()
    assert config.model == t5_1_1_config(size)
    assert (config.train_steps, config.model_dir, config.batch_size) == (7, "/tmp/x", 64)
    assert config.task_feature_lengths == {"inputs": 32, "targets": 8}
    # T5X's finetuning defaults flow through: Adafactor, dropout 0.1, z-loss 1e-4, sum-normalised.
    assert (config.optimizer, config.dropout_rate, config.z_loss, config.loss_normalizing_factor) == (
        "adafactor", 0.1, 1e-4, None)


@pytest.mark.parametrize("path", sorted(p.name for p in (GIN / "experiments").glob("*.gin")))
def test_experiment_files(path):
    text = (GIN / "experiments" / path).read_text()
    assert text.startswith("#") and "dsbs train --gin_file=experiments/" + path in text
    assert len(text.splitlines()) <= 30
    _parse([f"--gin_file=experiments/{path}", "--gin.MODEL_DIR=/tmp/x"])  # imports `tasks`
    config = trainer.TrainConfig()
    assert config.model_dir == "/tmp/x" and config.train_steps == 10000
    variant = "standard" if "_standard_" in path else "label"
    assert config.eval_tasks and all(t.endswith(f"_{variant}_gold") for t in config.eval_tasks)
    # Names the tasks package registers (`tasks.task_name`), fraction suffix included.
    import tasks

    dataset, kind = evaluation.split_task_name(config.mixture_or_task_name)
    labels = config.mixture_or_task_name.split(f"_{kind}_")[1].split("_")[0]
    assert config.mixture_or_task_name in {tasks.task_name(dataset, kind, labels, f)
                                           for f in (*tasks.DEFAULT_FRACTIONS, 100.0)}
    assert config.loss_mode == ("paired" if "_paired_" in path else "mixture")


def test_eval_run_file():
    _parse(["--gin_file=runs/eval.gin", "--gin.CHECKPOINT_PATH=/tmp/run", "--gin.MIXTURE_OR_TASK_NAME=cqa_label_gold"])
    config = evaluation.EvalJobConfig()
    assert (config.checkpoint_path, tuple(config.eval_tasks), config.max_decode_length) == (
        "/tmp/run", ("cqa_label_gold",), 64)


def test_run_files_declare_required_macros_first():
    for name in ("finetune.gin", "eval.gin"):
        text = (GIN / "runs" / name).read_text()
        header = text.split("from __gin__")[0]
        assert "Required to be set" in header and "Commonly overridden" in header
        assert "%gin.REQUIRED" in text


def test_missing_required_macro_names_it():
    with pytest.raises(gin_utils.GinConfigError, match="TRAIN_STEPS|train_steps"):
        _parse(["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", *REQUIRED[:3]])
        trainer.TrainConfig()


def test_unknown_macro_names_flag_and_suggests(tmp_path):
    with pytest.raises(gin_utils.GinConfigError) as e:
        _parse(["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", *REQUIRED, "--gin.TRAIN_STEPZ=5"])
    assert "TRAIN_STEPZ" in str(e.value) and "flag --gin.TRAIN_STEPZ" in str(e.value)
    assert "did you mean TRAIN_STEPS" in str(e.value)
    exp = tmp_path / "typo.gin"
    exp.write_text("include 'models/tiny.gin'\ninclude 'runs/finetune.gin'\n\nBATCH_SIZ = 8\n")
    with pytest.raises(gin_utils.GinConfigError, match=rf"BATCH_SIZ \(set at {exp}:4\).*BATCH_SIZE"):
        _parse([f"--gin_file={exp}", *REQUIRED])


def test_unknown_configurable_names_file_and_line(tmp_path):
    exp = tmp_path / "bad.gin"
    exp.write_text("from __gin__ import dynamic_registration\nfrom dsbs_jax.train import trainer\n\n"
                   "trainer.TrainConfg.batch_size = 3\n")
    with pytest.raises(gin_utils.GinConfigError, match=rf"(?s)TrainConfg.*{exp.name}\", line 4"):
        _parse([f"--gin_file={exp}"])


def test_wrong_type_through_the_cli_names_the_binding(tmp_path, capsys):
    rc = cli.train_main(["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", *REQUIRED[:3],
                         "--gin.TRAIN_STEPS=ten"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "TrainConfig.train_steps: expected int, found str 'ten'" in err and "--gin.TRAIN_STEPS" in err
    exp = tmp_path / "typed.gin"
    exp.write_text("include 'models/tiny.gin'\ninclude 'runs/finetune.gin'\nBATCH_SIZE = 'big'\n")
    rc = cli.train_main([f"--gin_file={exp}", *REQUIRED])
    err = capsys.readouterr().err
    assert rc == 2 and "TrainConfig.batch_size" in err and f"{exp}:3" in err


def test_missing_gin_file_and_module(capsys):
    assert cli.train_main(["--gin_file=runs/nope.gin"]) == 2
    assert "--gin_file=runs/nope.gin: no such file" in capsys.readouterr().err
    assert cli.train_main(["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", *REQUIRED,
                           "--gin.MIXTURE_OR_TASK_MODULE=no_such_tasks_module"]) == 2
    assert "MIXTURE_OR_TASK_MODULE='no_such_tasks_module'" in capsys.readouterr().err


def test_missing_task_is_a_clear_error(tmp_path, capsys):
    rc = cli.train_main(["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", *REQUIRED[1:],
                         "--gin.MIXTURE_OR_TASK_NAME=no_such_task_dsbs_gold", f"--gin.MODEL_DIR={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "'no_such_task_dsbs_gold' is not registered" in err and "MIXTURE_OR_TASK_MODULE" in err


def test_default_eval_tasks_score_gold_labels_in_the_trained_format():
    import seqio

    names = ["cqa_label_gold", "cqa_standard_gold", "cqa_single_gold", "my_data_label_gold"]
    for name in names:
        seqio.TaskRegistry.add(name, seqio.FunctionDataSource(lambda split, shuffle_files, seed=None: None,
                                                               splits=["validation"]),
                               output_features={})
    try:
        assert evaluation.label_tasks_for("cqa_dsbs_llm_frac25") == ("cqa_label_gold",)
        assert evaluation.label_tasks_for("cqa_paired_gold") == ("cqa_label_gold",)
        assert evaluation.label_tasks_for("cqa_standard_llm_frac12.5") == ("cqa_standard_gold",)
        assert evaluation.label_tasks_for("cqa_single_gold") == ("cqa_single_gold",)
        assert evaluation.label_tasks_for("my_data_dsbs_gold") == ("my_data_label_gold",)
        assert evaluation.label_tasks_for("unknown_thing") == ("unknown_thing",)
    finally:
        for name in names:
            seqio.TaskRegistry.remove(name)


def test_gin_dir_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _parse(["--gin_file=models/small.gin", "--gin_file=runs/finetune.gin", *REQUIRED])
    assert trainer.TrainConfig().model.emb_dim == 512
    assert pathlib.Path(GIN / "runs" / "finetune.gin").is_file()
