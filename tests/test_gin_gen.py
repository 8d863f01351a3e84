"""Both gin trees' experiment files are what the method registry generates, and say so."""
import subprocess
import sys

from dsbs_jax import gin_gen, methods


def test_committed_gin_files_equal_the_generator():
    changed, stale = gin_gen.differences()
    assert not changed and not stale, (
        f"differ: {[str(p) for p in changed]}, stale: {[str(p) for p in stale]}; "
        "run `python -m dsbs_jax.gin_gen --write`")


def test_check_command_fails_on_an_edited_file(tmp_path):
    path = gin_gen.GIN_DIR / "t5x" / "experiments" / "cqa_dsbs_base.gin"
    original = path.read_text()
    try:
        path.write_text(original.replace('ALPHA = 0.5', 'ALPHA = 0.9'))
        result = subprocess.run([sys.executable, "-m", "dsbs_jax.gin_gen", "--check"], capture_output=True, text=True)
        assert result.returncode == 1 and "cqa_dsbs_base.gin" in result.stdout
    finally:
        path.write_text(original)


def test_every_method_has_an_experiment_on_every_paper_dataset():
    names = {e.name for e in gin_gen.experiments()}
    for dataset in gin_gen.PAPER_DATASETS:
        for method in methods.METHODS:
            assert f"{dataset}_{method}_base" in names


def test_t5x_files_carry_the_methods_loss_and_eval_task():
    for experiment in gin_gen.experiments():
        method = methods.get(experiment.method)
        text = (gin_gen.GIN_DIR / "t5x" / "experiments" / f"{experiment.name}.gin").read_text()
        assert f'MIXTURE_OR_TASK_NAME = "{method.train_task(experiment.dataset, experiment.fraction)}"' in text
        assert f'EVAL_MIXTURE_OR_TASK_NAME = "{method.eval_task(experiment.dataset)}"' in text
        assert ("include 'gin/t5x/paired.gin'" in text) == method.paired
        assert "Z_LOSS = 0.0" in text
        embedded = (gin_gen.GIN_DIR / "experiments" / f"{experiment.name}.gin").read_text()
        assert f"METHOD = '{method.name}'" in embedded and f"DATASET = '{experiment.dataset}'" in embedded
