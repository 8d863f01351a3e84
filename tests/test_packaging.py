"""What `pip install .` ships and pulls: the gin tree in the wheel, one TensorFlow."""
from __future__ import annotations

import ast
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _setup_list(name: str) -> list:
    """A top-level list assigned in setup.py (`_CORE`), read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    import shutil

    out = tmp_path_factory.mktemp("wheel")
    # A clean copy: setuptools reuses an in-tree build/ directory, whose stale files would hide a bug.
    src = out / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             str(src), "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("dsbs_jax-*.whl")
    return path


def test_wheel_ships_every_gin_file(wheel):
    shipped = {n[len("dsbs_jax/"):] for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".gin")}
    in_repo = {str(p.relative_to(REPO)) for p in (REPO / "gin").rglob("*.gin")}
    assert shipped == in_repo and "gin/models/base.gin" in shipped and "gin/runs/finetune.gin" in shipped


_OUTSIDE_A_CHECKOUT = """
import pathlib, sys
import dsbs_jax, dsbs_jax.gin_utils as gu
site = pathlib.Path(sys.argv[1]).resolve()
assert pathlib.Path(dsbs_jax.__file__).resolve().is_relative_to(site), dsbs_jax.__file__
assert gu.GIN_DIR.resolve().is_relative_to(site), gu.GIN_DIR
args = gu.parse_flags(["--gin_file=models/base.gin", "--gin_file=runs/finetune.gin",
                       "--gin.MIXTURE_OR_TASK_NAME=cqa_dsbs_gold", "--gin.MODEL_DIR=/tmp/x",
                       "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}", "--gin.TRAIN_STEPS=1"])
gu.parse(args)
from dsbs_jax.train import trainer
config = trainer.TrainConfig()
print(config.model.emb_dim, config.batch_size)
"""


def test_installed_wheel_resolves_gin_files_outside_a_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                             str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"  # no gin/ and no checkout here
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", _OUTSIDE_A_CHECKOUT, str(site)], capture_output=True, text=True,
                            env=env, cwd=str(elsewhere), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["768", "64"]  # models/base.gin's T5 1.1 base, runs/finetune.gin's batch


def test_one_tensorflow():
    """tensorflow-text requires `tensorflow`; depending on tensorflow-cpu as well installs both."""
    core = _setup_list("_CORE")
    names = [re.split(r"[<>=!~\[ ]", r)[0].lower() for r in core]
    assert "tensorflow-cpu" not in names and "tensorflow" in names and "tensorflow-text" in names
    requires = importlib.metadata.requires("tensorflow-text") or []
    tf_reqs = [r for r in requires if re.match(r"tensorflow(-cpu)?\b(?!-)", r) and "extra ==" not in r]
    assert tf_reqs and all(re.match(r"tensorflow[<>=; ]", r) for r in tf_reqs), requires
