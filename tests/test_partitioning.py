"""Sharding on 8 fake CPU devices (tests/conftest.py): a (4, 2) data x model mesh with T5X's rules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from dsbs_jax.models import network, partitioning
from dsbs_jax.models.config import T5Config

# Sharded dims (vocab, mlp, heads*head_dim, heads) divisible by the model axis (2).
CFG = T5Config(vocab_size=128, emb_dim=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
               head_dim=8, mlp_dim=64, dropout_rate=0.0)


def test_rules_match_t5x_standard_rules():
    rules = dict(partitioning.STANDARD_LOGICAL_AXIS_RULES)
    assert rules["batch"] == "data"
    for name in ("vocab", "mlp", "heads", "joined_kv"):
        assert rules[name] == "model"
    for name in ("embed", "kv", "relpos_buckets", "length"):
        assert rules[name] is None
    assert partitioning.standard_logical_axis_rules() == partitioning.STANDARD_LOGICAL_AXIS_RULES
    assert ("embed", "data") in partitioning.standard_logical_axis_rules(parameter_partitioning_dims=2)
    with pytest.raises(ValueError, match="partitioning_dims"):
        partitioning.standard_logical_axis_rules(3, 1)


def test_create_mesh():
    assert len(jax.devices()) == 8
    mesh = partitioning.create_mesh(4, 2)
    assert mesh.axis_names == ("data", "model") and mesh.devices.shape == (4, 2)
    assert partitioning.create_mesh(2, 1).devices.size == 2
    with pytest.raises(ValueError, match="needs 16 devices"):
        partitioning.create_mesh(8, 2)


def test_sharded_forward_matches_single_device():
    boxed = network.init_params(CFG, jax.random.PRNGKey(0))
    plain = network.unbox_params(boxed)
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    batch = dict(encoder_input_tokens=jax.random.randint(k1, (8, 12), 0, 128),
                 decoder_target_tokens=jax.random.randint(k2, (8, 6), 1, 128))
    batch["decoder_input_tokens"] = jnp.pad(batch["decoder_target_tokens"][:, :-1], ((0, 0), (1, 0)))
    model = network.Transformer(CFG)
    apply = lambda p, b: model.apply({"params": p}, **b, enable_dropout=False)  # noqa: E731
    expected = jax.jit(apply)(plain, batch)

    mesh = partitioning.create_mesh(4, 2)
    shardings = partitioning.params_shardings(boxed, mesh)
    params = partitioning.shard_params(boxed, mesh)
    data = partitioning.batch_sharding(mesh)
    batch = jax.device_put(batch, data)
    with partitioning.activation_sharding(mesh):
        logits = jax.jit(apply, in_shardings=(shardings, data))(params, batch)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-5, rtol=1e-5)
    assert logits.sharding.spec[0] == "data"

    flat = traverse_util.flatten_dict(params, sep="/")
    mlp = flat["encoder/layers_0/mlp/wi_0/kernel"]
    assert mlp.sharding.spec == P(None, "model")
    assert mlp.addressable_shards[0].data.shape == (32, 32)  # mlp dim 64 split over 2
    assert flat["decoder/layers_1/mlp/wo/kernel"].sharding.spec == P("model", None)
    assert flat["token_embedder/embedding"].sharding.spec == P("model", None)
    assert flat["token_embedder/embedding"].addressable_shards[0].data.shape == (64, 32)
    assert flat["encoder/layers_1/attention/query/kernel"].sharding.spec == P(None, "model")
    assert flat["decoder/logits_dense/kernel"].sharding.spec == P(None, "model")
    assert flat["encoder/relpos_bias/rel_embedding"].sharding.spec == P("model", None)
    assert flat["encoder/encoder_norm/scale"].sharding.spec == P(None)


def test_logical_to_mesh_sharding_from_specs_and_boxes():
    mesh = partitioning.create_mesh(4, 2)
    tree = {"a": P("embed", "mlp"), "b": P("batch", "length", "heads", "kv")}
    out = partitioning.logical_to_mesh_sharding(tree, mesh)
    assert out["a"].spec == P(None, "model") and out["b"].spec == P("data", None, "model", None)
    from_boxes = partitioning.logical_to_mesh_sharding(network.abstract_params(CFG), mesh)
    assert from_boxes["decoder"]["layers_0"]["self_attention"]["out"]["kernel"].spec == P("model", None)
    assert "token_embedder/embedding: P('model', None)" in partitioning.describe(from_boxes)


def test_generate_with_sharded_params_matches_unsharded():
    from dsbs_jax.models import decoding

    boxed = network.init_params(CFG, jax.random.PRNGKey(2))
    mesh = partitioning.create_mesh(4, 2)
    enc = jax.random.randint(jax.random.PRNGKey(3), (8, 10), 2, 128)
    expected = decoding.generate(network.unbox_params(boxed), CFG, enc, method="greedy", max_decode_length=5)
    sharded = partitioning.shard_params(boxed, mesh)
    got = decoding.generate(sharded, CFG, jax.device_put(enc, partitioning.batch_sharding(mesh)),
                            method="greedy", max_decode_length=5)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
