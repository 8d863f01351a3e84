"""Our network's parameter tree == the tree T5X's T5 1.1 network creates, name for name, shape for shape.

`t5x_expected_tree` is derived by reading T5X's source, not our model:
google-research/t5x @ cc342d4 (2026-04-21), files t5x/examples/t5/network.py ("N") and
t5x/examples/t5/layers.py ("L"). Line numbers below refer to that commit.
"""
import jax
import numpy as np
import pytest

from dsbs_jax.models.config import T5Config, t5_1_1_config
from dsbs_jax.models.network import Transformer


def _dense(in_dims, out_dims):
    # L399-406 DenseGeneral stores a 2-D kernel (prod(contracted input dims), prod(features))
    # and reshapes it at call time.
    return {"kernel": (int(np.prod(in_dims)), int(np.prod(out_dims)))}


def _attention(cfg: T5Config):
    # L199-217: query/key/value are DenseGeneral(axis=-1, features=(num_heads, head_dim));
    # L338-345: out is DenseGeneral(features=inputs_q.shape[-1] (= emb_dim), axis=(-2, -1)).
    qkv = _dense(cfg.emb_dim, (cfg.num_heads, cfg.head_dim))
    return {"query": qkv, "key": qkv, "value": qkv,
            "out": _dense((cfg.num_heads, cfg.head_dim), cfg.emb_dim)}


def _mlp(cfg: T5Config):
    # L460-470: one input projection per activation, named 'wi' if there is one activation,
    # else f'wi_{idx}' (L462), each DenseGeneral(intermediate_dim); L480-486: 'wo' back to
    # inputs.shape[-1].
    acts = tuple(cfg.mlp_activations)
    names = ["wi"] if len(acts) == 1 else [f"wi_{i}" for i in range(len(acts))]
    tree = {n: _dense(cfg.emb_dim, cfg.mlp_dim) for n in names}
    tree["wo"] = _dense(cfg.mlp_dim, cfg.emb_dim)
    return tree


def _norm(cfg: T5Config):
    return {"scale": (cfg.emb_dim,)}  # L697-699 LayerNorm 'scale' of shape (features,)


def _relpos(cfg: T5Config):
    # N194-203 / N242-251: one RelativePositionBiases named 'relpos_bias' per stack, shared by
    # all its layers; L651-656 'rel_embedding' of shape (num_heads, num_buckets).
    return {"rel_embedding": (cfg.num_heads, cfg.relative_attention_num_buckets)}


def t5x_expected_tree(cfg: T5Config):
    """Parameter names -> shapes of T5X's `network.Transformer(cfg)`."""
    encoder = {"relpos_bias": _relpos(cfg), "encoder_norm": _norm(cfg)}  # N218 'encoder_norm'
    for i in range(cfg.num_encoder_layers):  # N212-216 EncoderLayer(name=f'layers_{lyr}')
        encoder[f"layers_{i}"] = {
            "pre_attention_layer_norm": _norm(cfg),  # N64
            "attention": _attention(cfg),  # N68-75 name='attention'
            "pre_mlp_layer_norm": _norm(cfg),  # N82
            "mlp": _mlp(cfg),  # N84-90 name='mlp'
        }
    decoder = {"relpos_bias": _relpos(cfg), "decoder_norm": _norm(cfg)}  # N274 'decoder_norm'
    for i in range(cfg.num_decoder_layers):  # N260-264 DecoderLayer(name=f'layers_{lyr}')
        decoder[f"layers_{i}"] = {
            "pre_self_attention_layer_norm": _norm(cfg),  # N123
            "self_attention": _attention(cfg),  # N128-134
            "pre_cross_attention_layer_norm": _norm(cfg),  # N149-151
            "encoder_decoder_attention": _attention(cfg),  # N152-159
            "pre_mlp_layer_norm": _norm(cfg),  # N166
            "mlp": _mlp(cfg),  # N167-173
        }
    if not cfg.logits_via_embedding:  # N280-291: otherwise logits reuse the embedding (attend)
        decoder["logits_dense"] = _dense(cfg.emb_dim, cfg.vocab_size)
    # N302-310 + L512-518: Embed 'token_embedder' with embedding (num_embeddings, features).
    return {"token_embedder": {"embedding": (cfg.vocab_size, cfg.emb_dim)},
            "encoder": encoder, "decoder": decoder}


def _flat(tree):
    return {"/".join(k.key for k in path): tuple(leaf) if isinstance(leaf, tuple) else tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(
                tree, is_leaf=lambda x: isinstance(x, tuple))[0]}


def _our_tree(cfg: T5Config):
    tokens = jax.numpy.ones((2, 5), jax.numpy.int32)
    variables = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.PRNGKey(0), tokens, tokens, tokens,
                                                             enable_dropout=False))
    assert set(variables) == {"params"}, "T5X's network has no other variable collections"
    unboxed = jax.tree_util.tree_map(lambda x: getattr(x, "value", x), variables["params"],
                                     is_leaf=lambda x: hasattr(x, "value"))
    return _flat(unboxed)


@pytest.mark.parametrize("cfg", [
    t5_1_1_config("small"),
    t5_1_1_config("tiny"),
    t5_1_1_config("tiny", num_encoder_layers=3, num_decoder_layers=1, head_dim=5, vocab_size=96),
    t5_1_1_config("tiny", logits_via_embedding=True),
    t5_1_1_config("tiny", mlp_activations=("relu",)),
], ids=["small", "tiny", "tiny-asymmetric", "tiny-tied", "tiny-relu"])
def test_param_tree_matches_t5x(cfg):
    ours, expected = _our_tree(cfg), _flat(t5x_expected_tree(cfg))
    assert sorted(set(expected) - set(ours)) == [], "missing in ours"
    assert sorted(set(ours) - set(expected)) == [], "extra in ours"
    mismatched = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert mismatched == {}


def test_small_size_parameter_count():
    # T5 1.1 small (t5x/examples/t5/t5_1_1/small.gin: emb 512, 6 heads x 64, mlp 1024, 8+8
    # layers, vocab 32128), by hand: embedding + logits 2*32128*512 = 32,899,072; encoder layer
    # 4*512*384 + 3*512*1024 + 2*512 = 2,360,320 (x8); decoder layer 8*512*384 + 3*512*1024 +
    # 3*512 = 3,147,264 (x8); per stack relpos 6*32 + final norm 512 = 704 (x2). (~77M, the size
    # quoted for google/t5-v1_1-small.)
    total = sum(int(np.prod(s)) for s in _our_tree(t5_1_1_config("small")).values())
    assert total == 76_961_152
