"""The T5 v1.1 network: T5X's parameter tree, masking, packing and dropout on a tiny config."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from dsbs_jax.models import layers, network
from dsbs_jax.models.config import T5Config

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
               head_dim=8, mlp_dim=32, dropout_rate=0.0)


def _expected_tree(emb, heads, hd, mlp, vocab, buckets, n_enc, n_dec, logits_dense=True):
    """Names/shapes of T5X's T5 1.1 `target` tree, written out from the T5X checkpoint layout."""
    inner = heads * hd
    attn = {"query/kernel": (emb, inner), "key/kernel": (emb, inner), "value/kernel": (emb, inner),
            "out/kernel": (inner, emb)}
    mlp_p = {"wi_0/kernel": (emb, mlp), "wi_1/kernel": (emb, mlp), "wo/kernel": (mlp, emb)}
    tree = {"token_embedder/embedding": (vocab, emb),
            "encoder/relpos_bias/rel_embedding": (heads, buckets),
            "encoder/encoder_norm/scale": (emb,),
            "decoder/relpos_bias/rel_embedding": (heads, buckets),
            "decoder/decoder_norm/scale": (emb,)}
    for i in range(n_enc):
        p = f"encoder/layers_{i}/"
        tree[p + "pre_attention_layer_norm/scale"] = (emb,)
        tree[p + "pre_mlp_layer_norm/scale"] = (emb,)
        tree.update({p + "attention/" + k: v for k, v in attn.items()})
        tree.update({p + "mlp/" + k: v for k, v in mlp_p.items()})
    for i in range(n_dec):
        p = f"decoder/layers_{i}/"
        for norm in ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm", "pre_mlp_layer_norm"):
            tree[p + norm + "/scale"] = (emb,)
        for block in ("self_attention", "encoder_decoder_attention"):
            tree.update({p + block + "/" + k: v for k, v in attn.items()})
        tree.update({p + "mlp/" + k: v for k, v in mlp_p.items()})
    if logits_dense:
        tree["decoder/logits_dense/kernel"] = (emb, vocab)
    return tree


def _flat_shapes(params):
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(network.unbox_params(params), sep="/").items()}


@pytest.fixture(scope="module")
def params():
    return network.unbox_params(network.init_params(CFG, jax.random.PRNGKey(0)))


@functools.lru_cache(maxsize=None)
def _jitted_apply(cfg):
    model = network.Transformer(cfg)
    return jax.jit(lambda params, kw: model.apply({"params": params}, **kw, enable_dropout=False))


def _apply(params, cfg=CFG, **kw):
    """Deterministic forward pass -> logits `[batch, target_len, vocab]` (jitted per config)."""
    return _jitted_apply(cfg)(params, kw)


def _batch(rng, batch=2, inp=7, tgt=5, vocab=CFG.vocab_size):
    k1, k2 = jax.random.split(rng)
    enc = jax.random.randint(k1, (batch, inp), 2, vocab)
    targets = jax.random.randint(k2, (batch, tgt), 2, vocab)
    dec_in = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))
    return dict(encoder_input_tokens=enc, decoder_input_tokens=dec_in, decoder_target_tokens=targets)


def test_param_tree_matches_t5x_layout():
    got = _flat_shapes(network.abstract_params(CFG))
    assert got == _expected_tree(16, 2, 8, 32, 64, 32, 2, 2)
    assert got["encoder/layers_1/mlp/wi_1/kernel"] == (16, 32)
    assert got["decoder/layers_1/encoder_decoder_attention/out/kernel"] == (16, 16)

    tied = CFG.replace(logits_via_embedding=True, num_encoder_layers=1, num_decoder_layers=3)
    assert _flat_shapes(network.abstract_params(tied)) == _expected_tree(16, 2, 8, 32, 64, 32, 1, 3, logits_dense=False)

    t5_small = network.abstract_params(T5Config())
    shapes = _flat_shapes(t5_small)
    assert shapes == _expected_tree(512, 6, 64, 1024, 32128, 32, 8, 8)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 76_961_152  # HF google/t5-v1_1-small


def test_params_carry_t5x_logical_axes_and_float32():
    boxed = network.abstract_params(CFG.replace(dtype="bfloat16"))
    specs = traverse_util.flatten_dict(nn.get_partition_spec(boxed), sep="/")
    P = jax.sharding.PartitionSpec
    assert specs["token_embedder/embedding"] == P("vocab", "embed")
    assert specs["encoder/layers_0/attention/query/kernel"] == P("embed", "joined_kv")
    assert specs["decoder/layers_1/self_attention/out/kernel"] == P("joined_kv", "embed")
    assert specs["encoder/layers_1/mlp/wi_0/kernel"] == P("embed", "mlp")
    assert specs["decoder/layers_0/mlp/wo/kernel"] == P("mlp", "embed")
    assert specs["encoder/relpos_bias/rel_embedding"] == P("heads", "relpos_buckets")
    assert specs["decoder/logits_dense/kernel"] == P("embed", "vocab")
    assert specs["decoder/decoder_norm/scale"] == P("embed")
    leaves = jax.tree_util.tree_leaves(network.unbox_params(boxed))
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype("float32")}


def test_query_init_folds_in_attention_scaling():
    """T5X scales the query kernel's init by 1/sqrt(head_dim) instead of scaling logits."""
    cfg = CFG.replace(emb_dim=64, num_heads=4, head_dim=16)
    p = network.unbox_params(network.init_params(cfg, jax.random.PRNGKey(3)))
    attn = p["encoder"]["layers_0"]["attention"]
    q_std, k_std = float(jnp.std(attn["query"]["kernel"])), float(jnp.std(attn["key"]["kernel"]))
    np.testing.assert_allclose(k_std, 1 / np.sqrt(64), rtol=0.1)  # fan_in normal
    np.testing.assert_allclose(q_std, 1 / np.sqrt(64) / np.sqrt(16), rtol=0.1)


def test_logits_shape_dtype_and_encode_decode_split(params):
    batch = _batch(jax.random.PRNGKey(1))
    logits = _apply(params, **batch)
    assert logits.shape == (2, 5, 64) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    model = network.Transformer(CFG)

    @jax.jit
    def split(params, batch):
        encoded = model.apply({"params": params}, batch["encoder_input_tokens"], enable_dropout=False,
                              method=network.Transformer.encode)
        return encoded, model.apply({"params": params}, encoded, batch["encoder_input_tokens"],
                                    batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                                    enable_dropout=False, method=network.Transformer.decode)

    encoded, via_split = split(params, batch)
    assert encoded.shape == (2, 7, 16)
    np.testing.assert_allclose(via_split, logits, atol=1e-6)

    bf16 = _apply(params, cfg=CFG.replace(dtype="bfloat16"), **batch)
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, logits, atol=0.15 * float(jnp.abs(logits).max()))


def test_rms_layer_norm_matches_formula():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5)) * 4 + 1
    out, _ = layers.LayerNorm().init_with_output(jax.random.PRNGKey(0), x)
    expected = x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_relative_position_buckets_match_t5_definition():
    bucket = layers.relative_position_bucket
    # Bidirectional, 32 buckets: keys before the query use 0..15, keys after use 16..31.
    assert list(bucket(np.array([0, -1, -7, 1, 7]), True, 32, 128)) == [0, 1, 7, 17, 23]
    # Far distances saturate in the last bucket of their half.
    assert int(bucket(np.array(-1000), True, 32, 128)) == 15
    assert int(bucket(np.array(1000), True, 32, 128)) == 31
    # Causal: future keys all fall in bucket 0.
    assert list(bucket(np.array([3, 1, 0, -1, -20]), False, 32, 128)) == [0, 0, 0, 1, 17]


def test_decoder_is_causal(params):
    batch = _batch(jax.random.PRNGKey(2), tgt=6)
    base = _apply(params, **batch)
    t = 3
    changed = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"].at[:, t].set(5))
    out = _apply(params, **changed)
    np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-6)
    assert float(jnp.abs(out[:, t:] - base[:, t:]).max()) > 1e-3


def test_encoder_padding_is_masked(params):
    batch = _batch(jax.random.PRNGKey(3))
    base = _apply(params, **batch)
    padded = dict(batch, encoder_input_tokens=jnp.pad(batch["encoder_input_tokens"], ((0, 0), (0, 4))))
    np.testing.assert_allclose(_apply(params, **padded), base, atol=1e-5)
    # Target padding positions do not change the logits of real positions.
    tpad = {k: v for k, v in batch.items()}
    tpad["decoder_target_tokens"] = jnp.pad(batch["decoder_target_tokens"], ((0, 0), (0, 3)))
    tpad["decoder_input_tokens"] = jnp.pad(batch["decoder_input_tokens"], ((0, 0), (0, 3)))
    np.testing.assert_allclose(_apply(params, **tpad)[:, :5], base, atol=1e-5)


@pytest.mark.parametrize("with_positions", [True, False])
def test_packed_examples_match_unpacked(params, with_positions):
    a = _batch(jax.random.PRNGKey(4), batch=1, inp=5, tgt=4)
    b = _batch(jax.random.PRNGKey(5), batch=1, inp=6, tgt=3)
    cat = lambda k, pad: jnp.pad(jnp.concatenate([a[k], b[k]], axis=1), ((0, 0), (0, pad)))  # noqa: E731
    packed = dict(encoder_input_tokens=cat("encoder_input_tokens", 2),
                  decoder_input_tokens=cat("decoder_input_tokens", 1),
                  decoder_target_tokens=cat("decoder_target_tokens", 1),
                  encoder_segment_ids=jnp.array([[1] * 5 + [2] * 6 + [0] * 2]),
                  decoder_segment_ids=jnp.array([[1] * 4 + [2] * 3 + [0]]))
    if with_positions:
        packed["encoder_positions"] = jnp.array([list(range(5)) + list(range(6)) + [0, 0]])
        packed["decoder_positions"] = jnp.array([list(range(4)) + list(range(3)) + [0]])
    out = _apply(params, **packed)
    np.testing.assert_allclose(out[:, :4], _apply(params, **a), atol=1e-5)
    np.testing.assert_allclose(out[:, 4:7], _apply(params, **b), atol=1e-5)


def test_positions_drive_relative_bias():
    """Explicit positions change the bias exactly as shifting the arange would."""
    rel = layers.RelativePositionBiases(num_buckets=8, max_distance=16, num_heads=2)
    variables = rel.init(jax.random.PRNGKey(0), 4, 4)
    default = rel.apply(variables, 4, 4, False)
    pos = jnp.array([[0, 1, 2, 3], [0, 2, 4, 6]])
    explicit = rel.apply(variables, 4, 4, False, pos, pos)
    assert explicit.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(explicit[0], default[0])
    assert float(jnp.abs(explicit[1] - default[0]).max()) > 0


def test_dropout_on_and_off(params):
    cfg = CFG.replace(dropout_rate=0.3)
    batch = _batch(jax.random.PRNGKey(6))
    model = network.Transformer(cfg)
    off1 = _apply(params, cfg=cfg, **batch)
    off2 = _apply(params, cfg=cfg, **batch)
    np.testing.assert_array_equal(off1, off2)
    np.testing.assert_allclose(off1, _apply(params, **batch), atol=1e-6)  # rate unused when off
    on_jit = jax.jit(lambda rng: model.apply({"params": params}, **batch, enable_dropout=True,
                                             rngs={"dropout": rng}))
    on = lambda seed: on_jit(jax.random.PRNGKey(seed))  # noqa: E731
    np.testing.assert_array_equal(on(0), on(0))
    assert float(jnp.abs(on(0) - on(1)).max()) > 1e-3
    assert float(jnp.abs(on(0) - off1).max()) > 1e-3
    with pytest.raises(Exception, match="dropout"):
        model.apply({"params": params}, **batch, enable_dropout=True)


def test_logits_via_embedding_uses_scaled_embedding():
    cfg = CFG.replace(logits_via_embedding=True)
    params = network.unbox_params(network.init_params(cfg))
    batch = _batch(jax.random.PRNGKey(7))
    logits = _apply(params, cfg=cfg, **batch)
    assert logits.shape == (2, 5, 64)
    # Logits are the final decoder states against the embedding table, scaled by 1/sqrt(emb_dim).
    _, state = jax.jit(lambda p: network.Transformer(cfg).apply(
        {"params": p}, **batch, enable_dropout=False, capture_intermediates=True,
        mutable=["intermediates"]))(params)
    final = state["intermediates"]["decoder"]["decoder_norm"]["__call__"][0]
    expected = final @ params["token_embedder"]["embedding"].T / np.sqrt(16)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fused_mlp_projections_use_the_same_parameters_and_match(dtype):
    """Decoding's one-GEMM `wi_0|wi_1` reads T5X's two kernels and gives the separate GEMMs' output."""
    block = layers.MlpBlock(intermediate_dim=32, activations=("gelu", "linear"), intermediate_dropout_rate=0.0,
                            dtype=dtype)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 16)).astype(dtype)
    variables = block.init(jax.random.PRNGKey(0), x, deterministic=True)
    assert set(variables["params"]) == {"wi_0", "wi_1", "wo"}
    separate = block.apply(variables, x, deterministic=True)
    fused = block.apply(variables, x, deterministic=True, fused=True)
    assert fused.dtype == separate.dtype == dtype
    np.testing.assert_allclose(np.asarray(fused, np.float32), np.asarray(separate, np.float32),
                               rtol=1e-5 if dtype == jnp.float32 else 2e-2, atol=1e-6)
    # Fusing changes nothing when there is a single input projection (`wi`).
    single = layers.MlpBlock(intermediate_dim=32, activations=("relu",), intermediate_dropout_rate=0.0)
    single_vars = single.init(jax.random.PRNGKey(0), x.astype(jnp.float32), deterministic=True)
    np.testing.assert_array_equal(single.apply(single_vars, x.astype(jnp.float32), deterministic=True, fused=True),
                                  single.apply(single_vars, x.astype(jnp.float32), deterministic=True))


def test_fused_matmul_splits_in_kernel_order():
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 8))
    kernels = [jax.random.normal(jax.random.PRNGKey(i), (8, n)) for i, n in enumerate((3, 6, 2), 1)]
    outs = layers.fused_matmul(x, kernels)
    assert [o.shape for o in outs] == [(5, 3), (5, 6), (5, 2)]
    for out, kernel in zip(outs, kernels):
        np.testing.assert_allclose(out, x @ kernel, rtol=1e-5, atol=1e-5)
