"""The test session's JAX compilation cache (tests/conftest.py) changes no result.

The tiny letters run of `synthetic_letters.train_flags` (dropout on, a final evaluation that
decodes) is trained in fresh `dsbs train` processes twice more: once with the persistent cache
switched off, so that every executable is compiled, and once with the session's cache, which the
`letters_run` fixture has filled with these very executables, so that every one is read back from
disk and none compiled. JAX's compile log (`JAX_LOG_COMPILES`, shown under `--verbose`) tells the
two apart. Metrics, decoded predictions and final parameters must be bit-identical across all three.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np

import synthetic_letters
from dsbs_jax.train import inference

COMPILED = "Finished XLA compilation"
FROM_CACHE = "Persistent compilation cache hit"
TIMING = ("steps_per_s", "tokens_per_s")


def _train(model_dir, letters_root, **env) -> subprocess.Popen:
    env = synthetic_letters.dsbs_env(*letters_root, JAX_LOG_COMPILES="1", **env)
    return subprocess.Popen([sys.executable, "-m", "dsbs_jax.cli", "train", *synthetic_letters.train_flags(model_dir),
                             "--verbose"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> str:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stderr


def _results(model_dir):
    """What a run produced, timing aside: metrics lines, decoded eval outputs, final parameters."""
    metrics = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    outputs = {p.name: p.read_text() for p in sorted((model_dir / "inference_eval").iterdir())}
    params = inference.load_for_inference(str(model_dir))[0]
    return metrics, outputs, {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


def test_training_with_the_cache_equals_training_without(letters_root, letters_run, tmp_path):
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] and os.listdir(os.environ["JAX_COMPILATION_CACHE_DIR"])
    without = _train(tmp_path / "without", letters_root, JAX_ENABLE_COMPILATION_CACHE="false")
    cached = _train(tmp_path / "cached", letters_root)
    without_log, cached_log = _finish(without), _finish(cached)

    assert without_log.count(FROM_CACHE) == 0 and without_log.count(COMPILED) > 20, without_log[-3000:]
    # Every executable of the cached run came from the cache: as many cache hits as executables.
    assert cached_log.count(FROM_CACHE) == cached_log.count(COMPILED) > 20, cached_log[-3000:]

    reference = _results(letters_run)
    for model_dir in (tmp_path / "without", tmp_path / "cached"):
        metrics, outputs, params = _results(model_dir)
        assert metrics == reference[0] and len(metrics) >= 2  # the last step's line and the final eval's
        assert outputs == reference[1] and len(outputs) >= 2
        assert params.keys() == reference[2].keys() and len(params) > 20
        for name, value in params.items():
            np.testing.assert_array_equal(value, reference[2][name], err_msg=name)
    assert any(np.any(v != 0) for v in reference[2].values())
