"""Losses of the train step against losses computed by hand in numpy, on a fixed batch.

The model is the real tiny T5 (`network.Transformer`); only the loss arithmetic is redone here.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dsbs_jax.models import network
from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.train import losses, optimizers, train_state, train_step
from dsbs_jax.train.losses import LossConfig

CFG = t5_1_1_config("tiny", vocab_size=64)
MODEL = network.Transformer(CFG)


def _pair(rng, batch, in_len, tgt_len, lengths):
    """Unpacked enc-dec features; row i has `lengths[i]` real target tokens."""
    enc = rng.randint(2, CFG.vocab_size, (batch, in_len)).astype(np.int32)
    enc[:, -2:] = 0
    tgt = rng.randint(2, CFG.vocab_size, (batch, tgt_len)).astype(np.int32)
    for i, n in enumerate(lengths):
        tgt[i, n:] = 0
    dec_in = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": tgt,
            "decoder_loss_weights": (tgt > 0).astype(np.int32)}


@pytest.fixture(scope="module")
def params():
    return network.unbox_params(jax.jit(lambda rng: network.init_params(CFG, rng))(jax.random.PRNGKey(1)))


def _np_token_losses(logits, targets, z_loss, label_smoothing=0.0):
    """Per-token loss by hand: log-softmax, soft targets as T5X builds them, z-loss."""
    logits = np.asarray(logits, np.float64)
    m = logits.max(-1, keepdims=True)
    log_z = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    logp = logits - log_z[..., None]
    vocab = logits.shape[-1]
    conf = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    soft = np.full(logits.shape, low)
    np.put_along_axis(soft, targets[..., None].astype(np.int64), conf, axis=-1)
    ce = -(soft * logp).sum(-1)
    if label_smoothing:
        ce -= -(conf * np.log(conf) + (vocab - 1) * low * np.log(low + 1e-20))
    return ce + z_loss * log_z ** 2


@jax.jit
def _apply(params, enc, dec_in, dec_tgt):
    return MODEL.apply({"params": params}, enc, dec_in, dec_tgt, enable_dropout=False)


def _logits(params, batch, prefix=""):
    return np.asarray(_apply(params, *(batch[prefix + k] for k in (
        "encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens"))))


def _step_loss(params, batch, config, num_microbatches=1):
    tx = optax.sgd(0.1)
    state = train_state.create_train_state(params, tx)
    new_state, metrics = jax.jit(lambda s, b: train_step.train_step(
        s, b, apply_fn=MODEL.apply, loss_config=config, num_microbatches=num_microbatches,
        enable_dropout=False))(state, batch)
    return float(metrics["loss"]), metrics, new_state


def test_mixture_loss_is_t5x_token_sum_with_z_loss(params):
    batch = _pair(np.random.RandomState(0), 4, 10, 7, [7, 3, 5, 1])
    config = LossConfig(mode="target", z_loss=1e-4)
    per_token = _np_token_losses(_logits(params, batch), batch["decoder_target_tokens"], 1e-4)
    expected = float((per_token * batch["decoder_loss_weights"]).sum())  # T5X default: no normalization
    loss, metrics, _ = _step_loss(params, batch, config)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert float(metrics["targets/tokens"]) == 16.0
    # The mean per-token loss is the same sum over the 16 real tokens.
    assert float(metrics["targets/loss"]) == pytest.approx(expected / 16, rel=1e-5)


def test_paired_loss_is_alpha_weighted_mean_token_losses(params):
    rng = np.random.RandomState(1)
    label = _pair(rng, 4, 10, 3, [2, 2, 3, 2])
    rationale = _pair(rng, 4, 10, 12, [12, 9, 4, 11])
    rationale["encoder_input_tokens"] = label["encoder_input_tokens"].copy()
    rationale["encoder_input_tokens"][:, 0] = 7  # a different task prefix on the same x
    batch = {**label, **{"rationale_" + k: v for k, v in rationale.items()}}
    alpha, z = 0.3, 1e-4
    l_label = _np_token_losses(_logits(params, batch), label["decoder_target_tokens"], z)
    l_rat = _np_token_losses(_logits(params, batch, "rationale_"), rationale["decoder_target_tokens"], z)
    w_l, w_r = label["decoder_loss_weights"], rationale["decoder_loss_weights"]
    expected = alpha * (l_label * w_l).sum() / w_l.sum() + (1 - alpha) * (l_rat * w_r).sum() / w_r.sum()
    loss, metrics, _ = _step_loss(params, batch, LossConfig(mode="paired", alpha=alpha, z_loss=z))
    assert loss == pytest.approx(float(expected), rel=1e-5)
    assert float(metrics["rationale/tokens"]) == 36.0 and float(metrics["label/tokens"]) == 9.0
    # Same batch in mixture mode would weigh the 36 rationale tokens 4x the 9 label tokens.
    mixture_weight_of_rationale = w_r.sum() / (w_l.sum() + w_r.sum())
    assert mixture_weight_of_rationale == pytest.approx(0.8)


def _loss_of(logits, batch, config):
    """The loss arithmetic of `train_step.loss_and_metrics` on given logits (no model)."""
    (weights, norm), = train_step.normalizers(batch, config).values()
    loss_sum, _, _ = losses.weighted_token_loss(jnp.asarray(logits), jnp.asarray(batch["decoder_target_tokens"]),
                                                weights, config)
    return float(loss_sum / norm)


def test_normalizing_factors_and_label_smoothing():
    rng = np.random.RandomState(2)
    batch = _pair(rng, 4, 10, 7, [7, 3, 5, 1])
    logits = rng.normal(0, 3, (4, 7, CFG.vocab_size)).astype(np.float32)
    tgt, w = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    per_token = _np_token_losses(logits, tgt, 0.0)
    cases = {
        None: (per_token * w).sum(),
        "NUM_REAL_TARGET_TOKENS": (per_token * w).sum() / w.sum(),
        "NUM_TOTAL_TARGET_TOKENS": (per_token * w).sum() / w.size,
        # T5X: weights / sequence length, summed, divided by the sum of those weights (= #sequences).
        "AVERAGE_PER_SEQUENCE": sum((per_token[i] * w[i]).sum() / w[i].sum() for i in range(4)) / 4,
        512.0: (per_token * w).sum() / 512.0,
    }
    for lnf, expected in cases.items():
        loss = _loss_of(logits, batch, LossConfig(z_loss=0.0, loss_normalizing_factor=lnf))
        assert loss == pytest.approx(float(expected), rel=1e-5), lnf
    smoothed = _np_token_losses(logits, tgt, 1e-4, label_smoothing=0.1)
    loss = _loss_of(logits, batch, LossConfig(z_loss=1e-4, label_smoothing=0.1))
    assert loss == pytest.approx(float((smoothed * w).sum()), rel=1e-5)


def test_average_per_sequence_on_packed_rows():
    targets = jnp.array([[5, 6, 7, 8, 9, 0]], jnp.int32)
    batch = {"decoder_target_tokens": targets, "decoder_loss_weights": (targets > 0).astype(jnp.int32),
             "decoder_segment_ids": jnp.array([[1, 1, 1, 2, 2, 0]])}
    weights, norm = losses.loss_weights_and_normalizer(batch, "AVERAGE_PER_SEQUENCE")
    np.testing.assert_allclose(np.asarray(weights), [[1 / 3, 1 / 3, 1 / 3, 0.5, 0.5, 0.0]], rtol=1e-6)
    assert float(norm) == pytest.approx(2.0)  # two packed sequences


def test_microbatches_give_the_full_batch_update(params):
    rng = np.random.RandomState(3)
    batch = dict(_pair(rng, 4, 10, 5, [5, 1, 4, 2]))
    batch.update({"rationale_" + k: v for k, v in _pair(rng, 4, 10, 9, [9, 2, 6, 8]).items()})
    mode = "paired"  # two normalizers at once; mixture mode shares the code path
    # Per-microbatch normalization would differ from the full batch here (uneven token counts).
    config = LossConfig(mode=mode, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS")
    loss1, _, s1 = _step_loss(params, batch, config, 1)
    loss2, _, s2 = _step_loss(params, batch, config, 2)
    assert loss2 == pytest.approx(loss1, rel=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_optimizer_defaults():
    ada = optimizers.OptimizerConfig("adafactor").resolved()
    assert (ada.learning_rate, ada.schedule, ada.grad_clip_norm) == (1e-3, "constant", None)
    adamw = optimizers.OptimizerConfig("adamw")
    lr = optimizers.learning_rate_schedule(adamw, 100)
    assert [float(lr(s)) for s in (0, 50, 100)] == pytest.approx([5e-5, 2.5e-5, 0.0])
    # AdamW's global-norm clipping at 1.0: a gradient of norm 10 acts like the same gradient / 10.
    params = {"w": jnp.ones((3,))}
    grads = {"w": jnp.array([6.0, 8.0, 0.0])}
    tx = optimizers.make_optimizer(adamw, 100)
    ref = optax.adamw(5e-5, weight_decay=0.0)
    u1, _ = tx.update(grads, tx.init(params), params)
    u2, _ = ref.update(jax.tree.map(lambda g: g / 10.0, grads), ref.init(params), params)
    np.testing.assert_allclose(np.asarray(u1["w"]), np.asarray(u2["w"]), rtol=1e-6)
    with pytest.raises(ValueError, match="OPTIMIZER"):
        optimizers.OptimizerConfig("sgd")
    with pytest.raises(ValueError, match="methods.py"):
        LossConfig(mode="sum")
