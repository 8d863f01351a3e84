"""`dsbs export`: a `dsbs train` MODEL_DIR as a Hugging Face directory and as a T5X checkpoint.

The run directory is the trainer's real layout (orbax `checkpoints/{step}/state` + `dsbs_run.json`)
holding a tiny T5 1.1 whose every tensor is random (heads*d_kv != d_model, so a missed transpose
shows). The HF export is loaded by `transformers.T5ForConditionalGeneration` and must give our
network's logits within 1e-4; the T5X export must read back identical with `load_t5x_checkpoint`.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsbs_jax.models import checkpoints, network
from dsbs_jax.models.config import t5_1_1_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_hf_parity import VOCAB, _batch, _torch_logits  # noqa: E402  (same batch and HF forward)

STEP = 7


def _run_dir(root, tied: bool):
    import orbax.checkpoint as ocp

    config = t5_1_1_config("tiny", vocab_size=VOCAB, head_dim=6, logits_via_embedding=tied)
    params = network.unbox_params(network.init_params(config, jax.random.PRNGKey(3)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: np.asarray(p) + rng.normal(0, 0.3, p.shape).astype(np.float32), params)
    model_dir = root / ("tied" if tied else "untied")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(model_dir / "checkpoints" / str(STEP) / "state",
                   {"params": params, "step": np.asarray(STEP, np.int32)})
    (model_dir / "dsbs_run.json").write_text(json.dumps({
        "model": dataclasses.asdict(config), "vocabulary": {"sentencepiece_model_file": None, "extra_ids": 0},
        "mixture_or_task_name": "x_standard_gold", "task_feature_lengths": {"inputs": 12, "targets": 9}}))
    return model_dir, params, config


def _export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsbs_jax.cli", "export", *args], capture_output=True, text=True,
                          timeout=300)


def _our_logits(params, config, inputs, targets, decoder_inputs):
    return np.asarray(network.Transformer(config).apply(
        {"params": params}, jnp.asarray(inputs), jnp.asarray(decoder_inputs), jnp.asarray(targets),
        enable_dropout=False))


@pytest.mark.parametrize("tied", [False, True], ids=["t5_1_1_untied_head", "tied_head"])
def test_hf_export_loads_in_transformers_with_the_same_logits(tmp_path, tied):
    model_dir, params, config = _run_dir(tmp_path, tied)
    out = tmp_path / "hf"
    result = _export("--checkpoint", str(model_dir), "--format", "hf", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                     "model.safetensors"]
    model = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
    if not tied:  # transformers 5 declares T5's head tied; the export's own head must survive loading
        np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(),
                                      np.asarray(params["decoder"]["logits_dense"]["kernel"]).T)
    inputs, targets, decoder_inputs = _batch()
    ref = _torch_logits(model, inputs, decoder_inputs)
    ours = _our_logits(params, config, inputs, targets, decoder_inputs)
    valid = targets > 0  # T5X masks padded target rows entirely; HF does not
    assert np.abs(ref[valid]).max() > 1.0
    np.testing.assert_allclose(ours[valid], ref[valid], atol=1e-4, rtol=1e-4)
    # And our own HF reader gets back exactly the trained tensors.
    back, back_config = checkpoints.load_hf_checkpoint(str(out))
    assert back_config.logits_via_embedding == tied and back_config.head_dim == 6
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_t5x_export_reads_back_identical(tmp_path):
    model_dir, params, _ = _run_dir(tmp_path, tied=False)
    out = tmp_path / "t5x"
    result = _export("--checkpoint", str(model_dir), "--format", "t5x", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(out / f"checkpoint_{STEP}")
    assert (out / f"checkpoint_{STEP}" / "checkpoint").is_file()  # T5X's msgpack, not orbax
    back = checkpoints.load_t5x_checkpoint(str(out))
    flat = lambda t: {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(t)}
    a, b = flat(back), flat(params)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_export_errors_are_one_line(tmp_path):
    result = _export("--checkpoint", str(tmp_path / "nope"), "--format", "hf", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.startswith("dsbs export: error: ")
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    model_dir, _, _ = _run_dir(tmp_path, tied=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    result = _export("--checkpoint", str(model_dir), "--format", "hf", "--out", str(tmp_path / "busy"))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["keep.txt"]
