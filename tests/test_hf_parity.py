"""Hugging Face T5 checkpoints load into our network with the same logits and greedy outputs.

A tiny random `transformers.T5ForConditionalGeneration` (T5 1.1: gated-GELU, inner dim
heads*d_kv != d_model so a missed transpose cannot hide) is saved in each on-disk form we
read, loaded with `load_hf_checkpoint`, and compared against PyTorch in float32.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from dsbs_jax.models import checkpoints  # noqa: E402
from dsbs_jax.models.decoding import generate  # noqa: E402
from dsbs_jax.models.network import Transformer  # noqa: E402

VOCAB, INPUT_LEN, TARGET_LEN, DECODE_LEN = 128, 12, 9, 10


def _hf_model(tie_word_embeddings: bool, seed: int = 0):
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=6, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=tie_word_embeddings, dropout_rate=0.0,
        decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # HF initialises norms to 1 and small biases; make every tensor matter.
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn_like(p))
            elif name.endswith(("o.weight", "wo.weight")):
                # Larger sub-layer outputs, so the residual stream is not dominated by the input
                # embedding and a tied head does not just repeat the previous token when decoding.
                p.mul_(8.0)
    return model


def _untie_head(model):
    """transformers 4.x T5 1.1 layout: a separate lm_head and no decoder-output rescaling."""
    head = torch.nn.Linear(model.config.d_model, VOCAB, bias=False)
    torch.nn.init.normal_(head.weight, std=0.5)
    model.lm_head = head
    model.config.scale_decoder_outputs = False
    return model


def _save(model, directory, form):
    os.makedirs(directory, exist_ok=True)
    if form == "safetensors":
        model.save_pretrained(directory)
    elif form == "sharded":
        model.save_pretrained(directory, max_shard_size="20KB")
        assert os.path.exists(os.path.join(directory, "model.safetensors.index.json"))
    elif form == "torch_bin":  # transformers 4.x `safe_serialization=False` output
        model.config.save_pretrained(directory)
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()},
                   os.path.join(directory, "pytorch_model.bin"))
    elif form == "untied_v4":
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in model.state_dict().items()
                 if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
        save_file(state, os.path.join(directory, "model.safetensors"))
        config = model.config.to_dict()
        config.pop("scale_decoder_outputs", None)
        config["tie_word_embeddings"] = False  # what 4.x wrote for google/t5-v1_1-*
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(config, f)
    return directory


def _batch(seed=1):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(2, VOCAB, (4, INPUT_LEN))
    targets = rng.integers(2, VOCAB, (4, TARGET_LEN))
    for row, (n_in, n_tgt) in enumerate([(12, 9), (7, 4), (3, 9), (9, 1)]):  # ragged padding
        inputs[row, n_in:] = 0
        targets[row, n_tgt:] = 0
    decoder_inputs = np.concatenate([np.zeros((4, 1), np.int64), targets[:, :-1]], axis=1)
    return inputs, targets, decoder_inputs


def _torch_logits(model, inputs, decoder_inputs):
    dec_mask = (decoder_inputs > 0) | (np.arange(TARGET_LEN) == 0)  # position 0 is the start token
    with torch.no_grad():
        out = model(input_ids=torch.tensor(inputs), attention_mask=torch.tensor(inputs > 0).long(),
                    decoder_input_ids=torch.tensor(decoder_inputs),
                    decoder_attention_mask=torch.tensor(dec_mask).long())
    return out.logits.numpy()


CASES = {
    "safetensors": (False, "safetensors", False),
    "sharded_safetensors": (False, "sharded", False),
    "pytorch_model_bin": (False, "torch_bin", False),
    "untied_lm_head_v4": (False, "untied_v4", True),
    "tied_rescaled": (True, "safetensors", False),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    tie, form, untie = CASES[request.param]
    model = _hf_model(tie, seed=len(request.param))
    if untie:
        model = _untie_head(model)
    directory = _save(model, str(tmp_path_factory.mktemp(request.param)), form)
    params, config = checkpoints.load_hf_checkpoint(directory)
    return request.param, model, params, config, directory


def test_config_mapping(case):
    name, model, _, config, _ = case
    hf = model.config
    assert (config.vocab_size, config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim) == (
        hf.vocab_size, hf.d_model, hf.num_heads, hf.d_kv, hf.d_ff)
    assert (config.num_encoder_layers, config.num_decoder_layers) == (hf.num_layers, hf.num_decoder_layers)
    assert tuple(config.mlp_activations) == ("gelu", "linear")
    assert config.logits_via_embedding == (name == "tied_rescaled")  # only HF's rescaled head is T5X's tied head


def test_logits_match_pytorch(case):
    name, model, params, config, _ = case
    inputs, targets, decoder_inputs = _batch()
    ours = Transformer(config).apply({"params": params}, jnp.asarray(inputs), jnp.asarray(decoder_inputs),
                                     jnp.asarray(targets), enable_dropout=False)
    ref = _torch_logits(model, inputs, decoder_inputs)
    valid = targets > 0  # T5X masks padded target rows entirely; HF does not
    assert valid.sum() > 10 and np.abs(ref[valid]).max() > 1.0
    np.testing.assert_allclose(np.asarray(ours)[valid], ref[valid], atol=1e-4, rtol=1e-4, err_msg=name)


def _hf_greedy(model, inputs, eos_id):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(inputs), attention_mask=torch.tensor(inputs > 0).long(),
                             do_sample=False, num_beams=1, max_new_tokens=DECODE_LEN, min_new_tokens=0,
                             decoder_start_token_id=0, eos_token_id=eos_id, pad_token_id=0).numpy()
    assert (out[:, 0] == 0).all()  # the decoder start token
    tokens = np.zeros((len(inputs), DECODE_LEN), np.int64)  # HF stops early when all rows ended
    tokens[:, :out.shape[1] - 1] = out[:, 1:]
    return tokens


def test_greedy_decoding_matches_hf_generate(case):
    name, model, params, config, _ = case
    inputs, _, _ = _batch(seed=2)
    expected = _hf_greedy(model, inputs, eos_id=1)
    assert len(np.unique(expected)) >= 4, "degenerate generations would make this comparison vacuous"
    ours = generate(params, config, jnp.asarray(inputs, jnp.int32), method="greedy",
                    max_decode_length=DECODE_LEN, eos_id=1)
    np.testing.assert_array_equal(np.asarray(ours), expected, err_msg=name)
    # A random model rarely emits id 1, so also stop on a token some row first emits at step
    # 3-6: rows then end at different steps and both sides must pad with 0 after it.
    row, step = next((r, j) for j in range(2, 6) for r in range(len(inputs))
                     if expected[r, j] > 1 and expected[r, j] not in expected[r, :j])
    eos = int(expected[row, step])
    expected = _hf_greedy(model, inputs, eos_id=eos)
    assert expected[row, step] == eos and (expected[row, step + 1:] == 0).all()
    ours = generate(params, config, jnp.asarray(inputs, jnp.int32), method="greedy",
                    max_decode_length=DECODE_LEN, eos_id=eos)
    np.testing.assert_array_equal(np.asarray(ours), expected, err_msg=f"{name}, eos_id={eos}")


def test_load_pretrained_detects_hf_and_validates(case):
    _, _, params, config, directory = case
    loaded, detected = checkpoints.load_pretrained(directory)
    assert detected == config
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, loaded, params))
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"num_heads: checkpoint 4 vs model 2"):
        checkpoints.load_pretrained(directory, config.replace(num_heads=2))


def test_torch_bin_needs_no_torch_until_read():
    # models/ must import without torch (GPU/TPU hosts); only reading a .bin imports it.
    import subprocess
    import sys

    code = ("import sys; import dsbs_jax.models.checkpoints, dsbs_jax.models.hf_convert; "
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
