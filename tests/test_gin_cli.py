"""Every gin file of the embedded trainer parses with its required macros bound; bad gin is a clear error."""
import pathlib

import gin
import pytest

from dsbs_jax import gin_gen, gin_utils, methods
from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.train import cli, evaluation, trainer

GIN = gin_utils.GIN_DIR
REQUIRED = ["--gin.METHOD=dsbs", "--gin.MODEL_DIR=/tmp/x",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", "--gin.TRAIN_STEPS=7", "--gin.DATASET=cqa"]
EXPERIMENTS = {e.name: e for e in gin_gen.experiments()}


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
    # The reference's optimizer and the method's loss flow through: AdamW, dropout 0.1, no z-loss.
    assert (config.optimizer, config.dropout_rate, config.pack) == ("adamw", 0.1, False)
    assert config.loss_config() == methods.get("dsbs").loss


@pytest.mark.parametrize("path", sorted(p.name for p in (GIN / "experiments").glob("*.gin")))
def test_experiment_files(path):
    text = (GIN / "experiments" / path).read_text()
    assert text.startswith("#") and "dsbs train --gin_file=experiments/" + path in text
    assert len(text.splitlines()) <= 30
    _parse([f"--gin_file=experiments/{path}", "--gin.MODEL_DIR=/tmp/x"])  # imports `tasks`
    config = trainer.TrainConfig()
    assert config.model_dir == "/tmp/x" and config.train_steps == 10000
    experiment = EXPERIMENTS[path[:-len(".gin")]]
    method = methods.get(experiment.method)
    assert (config.method, config.dataset, float(config.data_fraction)) == (
        experiment.method, experiment.dataset, experiment.fraction)
    assert config.training_task == method.train_task(experiment.dataset, experiment.fraction)
    assert config.eval_task_names() == (method.eval_task(experiment.dataset),)
    assert config.loss_config() == method.loss and not config.pack
    import tasks

    assert experiment.fraction in tasks.DEFAULT_FRACTIONS


def test_eval_run_file():
    _parse(["--gin_file=runs/eval.gin", "--gin.CHECKPOINT_PATH=/tmp/run", "--gin.MIXTURE_OR_TASK_NAME=cqa_label_gold"])
    config = evaluation.EvalJobConfig()
    assert (config.checkpoint_path, tuple(config.eval_tasks), config.max_decode_length) == (
        "/tmp/run", ("cqa_label_gold",), None)


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
    rc = cli.train_main(["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", *REQUIRED[2:-1],
                         "--gin.MIXTURE_OR_TASK_NAME=no_such_task_dsbs_gold", f"--gin.MODEL_DIR={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "'no_such_task_dsbs_gold' is not registered" in err and "MIXTURE_OR_TASK_MODULE" in err


def test_the_method_decides_task_eval_and_decoding():
    """METHOD + DATASET, or a task name of the family, resolve through the registry alone."""
    lengths = {"inputs": 32, "targets": 48}

    def config(**fields):
        return trainer.TrainConfig(task_feature_lengths=lengths, model_dir="/tmp/x", train_steps=1, **fields)

    assert config(method="dsbs", dataset="cqa", data_fraction=25).training_task == "cqa_paired_gold_frac25"
    assert config(method="dsbs", dataset="cqa").eval_task_names() == ("cqa_label_gold",)
    assert config(method="distill", dataset="cqa").eval_task_names() == ("cqa_standard_gold",)
    assert config(mixture_or_task_name="cqa_standard_llm_frac12.5").resolved()[0].name == "distill"
    assert config(mixture_or_task_name="my_data_dsbs_gold").eval_task_names() == ("my_data_label_gold",)
    assert config(method="single", dataset="cqa").decode_length() == 48
    assert config(method="dsbs", dataset="cqa").decode_length() == 64
    with pytest.raises(ValueError, match="method 'standard', not of METHOD='dsbs'"):
        config(method="dsbs", mixture_or_task_name="cqa_standard_gold")
    with pytest.raises(ValueError, match="its method is unknown: set METHOD"):
        config(mixture_or_task_name="unknown_thing")
    with pytest.raises(ValueError, match="Unknown method 'dsbs_paired'"):
        config(method="dsbs_paired", dataset="cqa")
    with pytest.raises(ValueError, match="cannot be packed"):
        config(method="dsbs", dataset="cqa", pack=True)


def test_gin_dir_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _parse(["--gin_file=models/small.gin", "--gin_file=runs/finetune.gin", *REQUIRED])
    assert trainer.TrainConfig().model.emb_dim == 512
    assert pathlib.Path(GIN / "runs" / "finetune.gin").is_file()
