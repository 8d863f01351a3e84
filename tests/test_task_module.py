"""`tasks` as T5X's MIXTURE_OR_TASK_MODULE, and its vocabulary's errors off GCP.

T5X (`t5x.utils.import_module`, git cc342d4) imports MIXTURE_OR_TASK_MODULE after parsing and
locking the gin config; a module that registers a gin configurable then fails ("Attempted to add
a new configurable after the config was locked", reported by T5X as "Your Task/Mixture module
contains gin configurables that must be loaded before gin flag parsing"). The check below does
exactly that with gin itself, on the real package over a real data root.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from dsbs_jax.data.vocab import DEFAULT_SPM_PATH

REPO = pathlib.Path(__file__).resolve().parents[1]

_AFTER_LOCKED_GIN = """
import json, gin, seqio
gin.parse_config("")
gin.finalize()                  # what T5X has done before it imports MIXTURE_OR_TASK_MODULE
import tasks                    # raises RuntimeError if anything in the package is @gin.configurable
ours = [s for s, c in gin.config._REGISTRY.items() if c.wrapped.__module__.split(".")[0] == "tasks"]
names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
print(json.dumps({"configurables": ours, "tasks": sorted(n for n in names if n.startswith("letters_"))}))
"""


def test_tasks_imports_after_gin_is_locked(letters_root):
    root, spm = letters_root
    env = {**os.environ, "DSBS_DATA_ROOT": str(root), "DSBS_SPM_PATH": spm, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _AFTER_LOCKED_GIN], capture_output=True, text=True, env=env,
                            cwd=str(REPO), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["configurables"] == []
    assert "letters_standard_gold" in out["tasks"] and "letters_dsbs_gold" in out["tasks"]


def test_vocab_module_registers_no_configurable():
    import gin

    import tasks.vocab  # noqa: F401

    assert not [s for s, c in gin.config._REGISTRY.items() if c.wrapped.__module__ == "tasks.vocab"]


def test_default_gcs_vocabulary_off_gcp_names_dsbs_spm_path(monkeypatch):
    """Off GCP (this machine has no route to Google Cloud Storage) the error says what to set."""
    from tasks import vocab

    monkeypatch.delenv(vocab.SPM_PATH_ENV, raising=False)
    v = vocab.get_vocabulary()
    assert v.sentencepiece_model_file == DEFAULT_SPM_PATH
    try:
        v.vocab_size  # reads the model file
    except vocab.VocabularyError as e:
        message = str(e)
    else:
        pytest.skip("gs://t5-data is readable here; the offline error cannot be shown")
    assert "\n" not in message and "DSBS_SPM_PATH" in message and DEFAULT_SPM_PATH in message
    assert "--train_vocab" in message


def test_missing_local_vocabulary_names_the_file(tmp_path):
    from tasks import vocab

    with pytest.raises(vocab.VocabularyError, match=r"nope\.model cannot be read .*DSBS_SPM_PATH"):
        vocab.get_vocabulary(str(tmp_path / "nope.model")).vocab_size


def test_dsbs_train_prints_the_vocabulary_error_as_one_line(tmp_path, letters_root):
    root = letters_root[0]
    env = {k: v for k, v in os.environ.items() if k != "DSBS_SPM_PATH"}
    env.update(DSBS_DATA_ROOT=str(root), DSBS_SPM_PATH=str(tmp_path / "missing.model"), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "dsbs_jax.cli", "train", "--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin",
         "--gin.MIXTURE_OR_TASK_MODULE='tasks'", "--gin.MIXTURE_OR_TASK_NAME='letters_standard_gold'",
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
         "--gin.TRAIN_STEPS=1"], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("dsbs train: error:")]
    assert len(errors) == 1 and "missing.model cannot be read" in errors[0] and "DSBS_SPM_PATH" in errors[0]
    assert "Traceback" not in result.stderr
