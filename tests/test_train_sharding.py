"""The jitted train step on (data, model) meshes of the 8 fake CPU devices (tests/conftest.py).

(4, 2) and (2, 4) meshes must follow the single-device run step for step, and params and
optimizer state must really be split across devices the way the logical-axis rules say.
"""
import flax.linen as nn
import jax
import numpy as np
import pytest

from dsbs_jax.models import network, partitioning
from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.train import optimizers, train_state, train_step
from dsbs_jax.train.losses import LossConfig

CFG = t5_1_1_config("tiny", vocab_size=128)  # heads 4, joined_kv 32, mlp 64, vocab 128: divisible by 4
RULES = partitioning.STANDARD_LOGICAL_AXIS_RULES
STEPS = 3


def _batches(steps, batch=8, in_len=12, tgt_len=6):
    """`steps` copies of one fixed batch: memorising it makes the loss fall step by step."""
    rng = np.random.RandomState(0)
    out = []
    for _ in range(1):
        tgt = rng.randint(2, CFG.vocab_size, (batch, tgt_len)).astype(np.int32)
        tgt[::2, 4:] = 0
        out.append({"encoder_input_tokens": rng.randint(2, CFG.vocab_size, (batch, in_len)).astype(np.int32),
                    "decoder_target_tokens": tgt,
                    "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1),
                    "decoder_loss_weights": (tgt > 0).astype(np.int32)})
    return out * steps


def _run(mesh_shape, optimizer):
    mesh = partitioning.create_mesh(*mesh_shape)
    tx = optimizers.make_optimizer(optimizers.OptimizerConfig(optimizer, learning_rate=1e-2), 100)
    boxed = network.abstract_params(CFG)
    shardings = train_state.state_shardings(tx, boxed, mesh, RULES)
    state = train_state.init_state_sharded(lambda: network.init_params(CFG, jax.random.PRNGKey(0)), tx, shardings)
    step = train_step.make_train_step(network.Transformer(CFG), LossConfig(), shardings, mesh, RULES)
    losses = []
    for batch in _batches(STEPS):
        state, metrics = step(state, {k: jax.device_put(v, train_step.batch_sharding(mesh)) for k, v in batch.items()})
        losses.append(float(metrics["loss"]))
    return state, losses, mesh


@pytest.fixture(scope="module")
def single_device():
    return _run((1, 1), "adafactor")


@pytest.mark.parametrize("mesh_shape", [(4, 2), (2, 4)])
def test_meshes_follow_the_single_device_run(single_device, mesh_shape):
    ref_state, ref_losses, _ = single_device
    state, losses, _ = _run(mesh_shape, "adafactor")
    assert ref_losses[-1] < ref_losses[0] - 1.0  # it trains
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def _expected_spec(logical):
    return tuple(nn.logical_to_mesh_axes(logical, RULES))


def test_params_and_adamw_state_are_sharded_by_the_rules():
    state, _, mesh = _run((2, 4), "adamw")
    logical = nn.get_partition_spec(network.abstract_params(CFG))
    adam = state.opt_state[1][0]  # chain(clip, adamw) -> adamw's ScaleByAdamState
    flat_logical = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(
        logical, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))}
    checked_model_sharded = 0
    for tree in (state.params, adam.mu, adam.nu):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            spec = _expected_spec(flat_logical[jax.tree_util.keystr(path)])
            got = tuple(leaf.sharding.spec) + (None,) * (leaf.ndim - len(leaf.sharding.spec))
            assert got == spec + (None,) * (leaf.ndim - len(spec)), jax.tree_util.keystr(path)
            # Each device really holds only its slice.
            expected_shard = tuple(d // (mesh.shape[a] if a else 1) for d, a in zip(leaf.shape, got))
            assert leaf.addressable_shards[0].data.shape == expected_shard
            checked_model_sharded += "model" in got
    # The tiny model has model-sharded kernels in every tree (attention, MLP, logits).
    assert checked_model_sharded >= 3 * 20
    assert state.params["decoder"]["logits_dense"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, "model")


def test_factored_adafactor_statistics_follow_their_parameter():
    # Factoring needs two dims >= 128: a wider config, shapes only (nothing is compiled).
    cfg = t5_1_1_config("tiny", vocab_size=256, emb_dim=128, mlp_dim=256)
    mesh = partitioning.create_mesh(2, 4)
    tx = optimizers.make_optimizer(optimizers.OptimizerConfig("adafactor"), 10)
    shardings = train_state.state_shardings(tx, network.abstract_params(cfg), mesh, RULES)
    factored = shardings.opt_state[0]  # optax.adafactor's FactoredState
    wi = ("encoder", "layers_0", "mlp", "wi_0", "kernel")  # [embed 128, mlp 256] -> P(None, 'model')

    def get(tree):
        for k in wi:
            tree = tree[k]
        return tree

    abstract = jax.eval_shape(tx.init, nn.unbox(network.abstract_params(cfg)))[0]
    # optax keeps the row statistic over the larger dim (mlp) and the column one over embed.
    shapes = {name: tuple(get(getattr(abstract, name)).shape) for name in ("v_row", "v_col")}
    specs = {name: tuple(get(getattr(factored, name)).spec) for name in ("v_row", "v_col")}
    for name in ("v_row", "v_col"):
        if shapes[name] == (256,):
            assert specs[name] == ("model",)
        else:
            assert shapes[name] == (128,) and specs[name] in ((), (None,))
    assert get(factored.v).spec == jax.sharding.PartitionSpec()  # dummy for factored params
