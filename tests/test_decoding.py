"""KV-cache decoding: cache == full forward pass; greedy, sampling and beam search on a tiny model."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dsbs_jax.models import decoding, network
from dsbs_jax.models.config import T5Config

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
               head_dim=8, mlp_dim=32, dropout_rate=0.0)
EOS = 1


@pytest.fixture(scope="module")
def params():
    return network.unbox_params(network.init_params(CFG, jax.random.PRNGKey(0)))


def _inputs(seed, batch=6, length=6, vocab=CFG.vocab_size):
    tokens = np.array(jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 2, vocab))
    tokens[0, -2:] = 0  # one padded example
    return jnp.asarray(tokens)


_seq_log_probs = jax.jit(decoding.sequence_log_probs, static_argnums=(1,))


@functools.lru_cache(maxsize=None)
def _forward(cfg):
    model = network.Transformer(cfg)
    return jax.jit(lambda params, enc, dec_in: model.apply(
        {"params": params}, enc, dec_in, jnp.ones_like(dec_in), enable_dropout=False))


def _full_logits(params, cfg, enc, dec_in):
    return _forward(cfg)(params, enc, dec_in)


def _naive_greedy(params, cfg, enc, steps):
    """Argmax loop re-running the full, uncached forward pass on the prefix (fixed length, causal)."""
    out = np.zeros((enc.shape[0], steps), np.int32)
    ended = np.zeros(enc.shape[0], bool)
    for t in range(steps):
        dec_in = jnp.pad(jnp.asarray(out[:, :-1]), ((0, 0), (1, 0)))
        nxt = np.array(jnp.argmax(_full_logits(params, cfg, enc, dec_in)[:, t], axis=-1))
        out[:, t] = np.where(ended, 0, nxt)
        ended |= out[:, t] == EOS
    return out


def _copy_batch(rng, n=32, length=6):
    """Synthetic task: copy 1..length-1 random tokens, then EOS."""
    k1, k2 = jax.random.split(rng)
    tokens = jax.random.randint(k1, (n, length), 2, CFG.vocab_size)
    lens = jax.random.randint(k2, (n, 1), 1, length)
    pos = jnp.arange(length + 1)[None]
    enc = jnp.where(pos[:, :length] < lens, tokens, 0)
    targets = jnp.where(pos < lens, jnp.pad(tokens, ((0, 0), (0, 1))), jnp.where(pos == lens, EOS, 0))
    return enc, targets


@pytest.fixture(scope="module")
def trained():
    """A briefly trained copy model: unlike random init, it ends sequences at varied lengths."""
    model = network.Transformer(CFG)
    params = network.unbox_params(network.init_params(CFG, jax.random.PRNGKey(0)))
    opt = optax.adam(3e-3)

    @jax.jit
    def train_step(params, opt_state, rng):
        enc, targets = _copy_batch(rng)
        dec_in = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))

        def loss_fn(p):
            logits = model.apply({"params": p}, enc, dec_in, targets, enable_dropout=False)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            return jnp.sum(loss * (targets > 0)) / jnp.sum(targets > 0)

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = opt.init(params)
    for rng in jax.random.split(jax.random.PRNGKey(1), 60):
        params, opt_state = train_step(params, opt_state, rng)
    return params


def test_cached_steps_match_full_forward(params):
    enc = _inputs(0)
    dec_in = jnp.pad(jax.random.randint(jax.random.PRNGKey(1), (6, 7), 2, 64), ((0, 0), (1, 0)))
    full = _full_logits(params, CFG, enc, dec_in)
    encode, init_cache, step = decoding._decoder_fns(CFG)
    step = jax.jit(step, static_argnums=(5,))
    encoded = encode(params, enc)
    cache = jax.jit(init_cache, static_argnums=(3,))(params, encoded, enc, dec_in.shape[1])
    for t in range(dec_in.shape[1]):
        logits, cache = step(params, cache, encoded, enc, dec_in[:, t], dec_in.shape[1])
        np.testing.assert_allclose(logits, full[:, t], atol=1e-5, rtol=1e-5)
    assert int(cache["decoder"]["layers_0"]["self_attention"]["cache_index"]) == dec_in.shape[1]


def test_greedy_matches_naive_argmax_loop(params):
    enc = _inputs(2)
    got = decoding.generate(params, CFG, enc, method="greedy", max_decode_length=8)
    assert got.shape == (6, 8) and got.dtype == jnp.int32
    np.testing.assert_array_equal(got, _naive_greedy(params, CFG, enc, 8))


def test_generation_stops_at_eos_and_pads_with_zeros(trained):
    p = trained
    enc = _copy_batch(jax.random.PRNGKey(3), n=6)[0]
    got = np.array(decoding.generate(p, CFG, enc, method="greedy", max_decode_length=8))
    np.testing.assert_array_equal(got, _naive_greedy(p, CFG, enc, 8))
    finished = 0
    for row in got:
        hits = np.flatnonzero(row == EOS)
        if hits.size:
            finished += 1
            assert np.all(row[hits[0] + 1:] == 0), row  # EOS kept, zeros after
    assert finished >= 3, got


def test_low_temperature_sampling_equals_greedy(params):
    enc = _inputs(4)
    greedy = decoding.generate(params, CFG, enc, method="greedy", max_decode_length=8)
    for temperature in (0.0, 1e-5):
        cold = decoding.generate(params, CFG, enc, method="sample", temperature=temperature,
                                 max_decode_length=8, rng=jax.random.PRNGKey(7))
        np.testing.assert_array_equal(cold, greedy)


def test_sampling_is_seeded_and_top_k_restricts_support(params):
    enc = _inputs(5)
    draw = lambda seed, **kw: np.array(decoding.generate(  # noqa: E731
        params, CFG, enc, method="sample", temperature=2.0, max_decode_length=8,
        rng=jax.random.PRNGKey(seed), **kw))
    np.testing.assert_array_equal(draw(0), draw(0))
    assert not np.array_equal(draw(0), draw(1))
    # top_k=1 is greedy whatever the temperature.
    greedy = decoding.generate(params, CFG, enc, method="greedy", max_decode_length=8)
    np.testing.assert_array_equal(draw(3, top_k=1), greedy)
    # With top_k=2 the first token is always one of the two most likely ones.
    first_logits = _full_logits(params, CFG, enc, jnp.zeros((6, 8), jnp.int32))[:, 0]
    top2 = np.array(jax.lax.top_k(first_logits, 2)[1])
    for seed in range(4):
        first = draw(seed, top_k=2)[:, 0]
        assert all(f in t for f, t in zip(first, top2))


def test_beam_with_one_beam_and_no_length_penalty_is_greedy(params, trained):
    """K=1 keeps the argmax path; alpha=0 stops as soon as a hypothesis ended (alpha > 0 may not)."""
    for p in (params, trained):
        enc = _inputs(6)
        greedy = decoding.generate(p, CFG, enc, method="greedy", max_decode_length=8)
        beam = decoding.generate(p, CFG, enc, method="beam", num_beams=1, alpha=0.0, max_decode_length=8)
        np.testing.assert_array_equal(beam, greedy)


def _brute_force_best(params, cfg, enc_row, length, alpha):
    """Best EOS-terminated hypothesis of at most `length` tokens by enumerating all of them."""
    hyps = []
    for n in range(length):
        for prefix in itertools.product([t for t in range(cfg.vocab_size) if t != EOS], repeat=n):
            hyps.append(list(prefix) + [EOS] + [0] * (length - n - 1))
    hyps = jnp.asarray(hyps, jnp.int32)
    enc = jnp.broadcast_to(enc_row, (hyps.shape[0], enc_row.shape[0]))
    logp = np.array(_seq_log_probs(params, cfg, enc, hyps))
    lengths = np.argmax(np.array(hyps) == EOS, axis=1) + 1
    scores = logp / ((5.0 + lengths) / 6.0) ** alpha
    return np.array(hyps[int(np.argmax(scores))]), float(np.max(scores))


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_wide_beam_is_exact_search(alpha):
    """With 2*beams >= vocab**length no hypothesis is ever pruned: beam == exhaustive search."""
    cfg = CFG.replace(vocab_size=4)
    p = network.unbox_params(network.init_params(cfg, jax.random.PRNGKey(1)))
    enc = _inputs(7, batch=2, vocab=4)
    length = 3
    beam = np.array(decoding.generate(p, cfg, enc, method="beam", num_beams=4 ** length // 2, alpha=alpha,
                                      max_decode_length=length))
    greedy = np.array(decoding.generate(p, cfg, enc, method="greedy", max_decode_length=length))
    beam_lp = np.array(_seq_log_probs(p, cfg, enc, beam))
    greedy_lp = np.array(_seq_log_probs(p, cfg, enc, greedy))
    for b in range(2):
        best, _ = _brute_force_best(p, cfg, enc[b], length, alpha)
        np.testing.assert_array_equal(beam[b], best)
        if alpha == 0.0 and EOS in greedy[b]:
            assert beam_lp[b] >= greedy_lp[b] - 1e-5


def test_beam_search_log_prob_at_least_greedy(trained):
    p = trained
    enc = _copy_batch(jax.random.PRNGKey(8), n=6)[0]
    greedy = decoding.generate(p, CFG, enc, method="greedy", max_decode_length=8)
    beam = decoding.generate(p, CFG, enc, method="beam", num_beams=4, alpha=0.0, max_decode_length=8)
    assert beam.shape == (6, 8)
    greedy_lp = np.array(_seq_log_probs(p, CFG, enc, greedy))
    beam_lp = np.array(_seq_log_probs(p, CFG, enc, beam))
    both_finished = [EOS in g and EOS in b for g, b in zip(np.array(greedy), np.array(beam))]
    assert any(both_finished)
    for b, ok in enumerate(both_finished):
        if ok:
            assert beam_lp[b] >= greedy_lp[b] - 1e-5, (b, beam_lp, greedy_lp)
    # Beam outputs follow generate's convention: zeros after the first EOS.
    for row in np.array(beam):
        hits = np.flatnonzero(row == EOS)
        if hits.size:
            assert np.all(row[hits[0] + 1:] == 0)


def test_jitted_decoder_is_reused(params):
    decoding._compiled.cache_clear()
    enc = _inputs(9)
    decoding.generate(params, CFG, enc, method="greedy", max_decode_length=4)
    decoding.generate(params, CFG, enc + 1, method="greedy", max_decode_length=4)
    assert decoding._compiled.cache_info().hits == 1 and decoding._compiled.cache_info().misses == 1
    with pytest.raises(ValueError, match="method"):
        decoding.generate(params, CFG, enc, method="nucleus", max_decode_length=4)


def test_argmax_equals_jnp_argmax_on_ties_nans_and_infs():
    x = np.random.default_rng(0).normal(size=(6, 9)).astype(np.float32)
    x[1, 3] = x[1, 5] = x[1].max() + 1  # tie: the first maximum wins
    x[2, 4] = x[2, 6] = np.nan  # a NaN wins, the first one
    x[3, :] = -np.inf
    x[4, 2] = np.inf
    x[5, :] = 0.0
    got = np.asarray(decoding._argmax(jnp.asarray(x)))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.asarray(jnp.argmax(jnp.asarray(x), axis=-1)))
    assert list(got[1:6]) == [3, 4, 0, 2, 0]
