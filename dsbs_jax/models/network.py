"""The T5 v1.1 encoder-decoder (student network) in flax.linen, parameter-compatible with T5X.

Module and parameter names, stored shapes and logical axis names are those of T5X's
`t5x/examples/t5/network.py`, so a T5X checkpoint's `target` tree restores without renaming:

    token_embedder/embedding                                  [vocab, emb]        (vocab, embed)
    encoder/relpos_bias/rel_embedding                         [heads, buckets]    (heads, relpos_buckets)
    encoder/layers_{i}/pre_attention_layer_norm/scale         [emb]               (embed,)
    encoder/layers_{i}/attention/{query,key,value}/kernel     [emb, heads*hd]     (embed, joined_kv)
    encoder/layers_{i}/attention/out/kernel                   [heads*hd, emb]     (joined_kv, embed)
    encoder/layers_{i}/pre_mlp_layer_norm/scale               [emb]
    encoder/layers_{i}/mlp/{wi_0,wi_1}/kernel                 [emb, mlp]          (embed, mlp)
    encoder/layers_{i}/mlp/wo/kernel                          [mlp, emb]          (mlp, embed)
    encoder/encoder_norm/scale                                [emb]
    decoder/relpos_bias/rel_embedding                         [heads, buckets]
    decoder/layers_{i}/{pre_self_attention_layer_norm, self_attention,
                        pre_cross_attention_layer_norm, encoder_decoder_attention,
                        pre_mlp_layer_norm, mlp}/...          (shapes as above)
    decoder/decoder_norm/scale                                [emb]
    decoder/logits_dense/kernel                               [emb, vocab]        (embed, vocab)
                                                              (absent if logits_via_embedding)

Parameters are float32 and come out of `init` boxed (`nn.LogicallyPartitioned`); `unbox_params`
returns the plain tree. Activations use `config.dtype`; logits are float32.

Deliberate differences from T5X, all leaving parameters and math unchanged (see layers.py):
token embedding by gather (`jnp.take`) instead of a one-hot matmul, float32 softmax, explicit
`*_positions` drive the relative-position bias of packed examples (T5X uses `arange`, which gives
the same distances inside a segment), and a decoding cache that also holds the projected encoder
keys/values for cross-attention.

Dropout follows T5X: masks are broadcast along the length axis (`broadcast_dims=(-2,)`), and the
`dropout` RNG stream is used only when `enable_dropout=True` and `config.dropout_rate > 0`.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta

from dsbs_jax.models import layers
from dsbs_jax.models.config import T5Config

Array = jax.Array


def _dtype(config: T5Config):
    return jnp.dtype(config.dtype)


def _relpos(config: T5Config) -> layers.RelativePositionBiases:
    return layers.RelativePositionBiases(
        num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance,
        num_heads=config.num_heads, dtype=_dtype(config), name="relpos_bias")


def _attention(config: T5Config, name: str, static_kv: bool = False) -> layers.MultiHeadDotProductAttention:
    return layers.MultiHeadDotProductAttention(
        num_heads=config.num_heads, head_dim=config.head_dim, dtype=_dtype(config),
        dropout_rate=config.dropout_rate, static_kv=static_kv, name=name)


def _mlp(config: T5Config) -> layers.MlpBlock:
    return layers.MlpBlock(intermediate_dim=config.mlp_dim, activations=tuple(config.mlp_activations),
                           intermediate_dropout_rate=config.dropout_rate, dtype=_dtype(config), name="mlp")


def _norm(config: T5Config, name: str) -> layers.LayerNorm:
    return layers.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=_dtype(config), name=name)


def _dropout(config: T5Config, x: Array, deterministic: bool, broadcast: bool = True) -> Array:
    return nn.Dropout(rate=config.dropout_rate, broadcast_dims=(-2,) if broadcast else ())(
        x, deterministic=deterministic)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + gated MLP block with residuals."""

    config: T5Config

    @nn.compact
    def __call__(self, inputs: Array, encoder_mask: Optional[Array], encoder_bias: Array,
                 deterministic: bool) -> Array:
        """`[batch, len, emb]` -> `[batch, len, emb]`."""
        cfg = self.config
        x = _norm(cfg, "pre_attention_layer_norm")(inputs)
        x = _attention(cfg, "attention")(x, x, encoder_mask, encoder_bias, deterministic=deterministic)
        x = _dropout(cfg, x, deterministic) + inputs
        y = _norm(cfg, "pre_mlp_layer_norm")(x)
        y = _mlp(cfg)(y, deterministic=deterministic)
        return _dropout(cfg, y, deterministic) + x


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention and gated MLP with residuals."""

    config: T5Config

    @nn.compact
    def __call__(self, inputs: Array, encoded: Array, decoder_mask: Optional[Array],
                 encoder_decoder_mask: Optional[Array], decoder_bias: Array, deterministic: bool,
                 decode: bool) -> Array:
        """`[batch, len, emb]` (len 1 in single-step decoding) -> `[batch, len, emb]`."""
        cfg = self.config
        x = _norm(cfg, "pre_self_attention_layer_norm")(inputs)
        x = _attention(cfg, "self_attention")(x, x, decoder_mask, decoder_bias,
                                              deterministic=deterministic, decode=decode)
        x = _dropout(cfg, x, deterministic) + inputs
        y = _norm(cfg, "pre_cross_attention_layer_norm")(x)
        y = _attention(cfg, "encoder_decoder_attention", static_kv=True)(
            y, encoded, encoder_decoder_mask, deterministic=deterministic, decode=decode)
        y = _dropout(cfg, y, deterministic) + x
        z = _norm(cfg, "pre_mlp_layer_norm")(y)
        z = _mlp(cfg)(z, deterministic=deterministic, fused=decode)
        return _dropout(cfg, z, deterministic) + y


class Encoder(nn.Module):
    """Embedding, `num_encoder_layers` layers sharing one `relpos_bias`, final `encoder_norm`."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoder_input_tokens: Array, encoder_mask: Optional[Array] = None,
                 encoder_positions: Optional[Array] = None, deterministic: bool = False) -> Array:
        """int `[batch, len]` -> encoded `[batch, len, emb]`."""
        cfg = self.config
        length = encoder_input_tokens.shape[-1]
        bias = _relpos(cfg)(length, length, True, encoder_positions, encoder_positions)
        x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
        x = _dropout(cfg, x, deterministic).astype(_dtype(cfg))
        for i in range(cfg.num_encoder_layers):
            x = EncoderLayer(cfg, name=f"layers_{i}")(x, encoder_mask, bias, deterministic)
        x = _norm(cfg, "encoder_norm")(x)
        return _dropout(cfg, x, deterministic, broadcast=False)


class Decoder(nn.Module):
    """Embedding, `num_decoder_layers` layers sharing one `relpos_bias`, `decoder_norm`, logits."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoded: Array, decoder_input_tokens: Array,
                 decoder_positions: Optional[Array] = None, decoder_mask: Optional[Array] = None,
                 encoder_decoder_mask: Optional[Array] = None, deterministic: bool = False,
                 decode: bool = False, max_decode_length: Optional[int] = None) -> Array:
        """Returns float32 logits `[batch, len, vocab]`."""
        cfg = self.config
        relpos = _relpos(cfg)
        if decode and max_decode_length:
            # Single-step decoding: the attention layer picks this step's row of the full matrix.
            bias = relpos(max_decode_length, max_decode_length, False)
        elif decode:
            length = decoder_input_tokens.shape[-1]
            bias = relpos(length, length, False)
        else:
            length = decoder_input_tokens.shape[-1]
            bias = relpos(length, length, False, decoder_positions, decoder_positions)
        y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
        y = _dropout(cfg, y, deterministic).astype(_dtype(cfg))
        for i in range(cfg.num_decoder_layers):
            y = DecoderLayer(cfg, name=f"layers_{i}")(
                y, encoded, decoder_mask, encoder_decoder_mask, bias, deterministic, decode)
        y = _norm(cfg, "decoder_norm")(y)
        y = _dropout(cfg, y, deterministic)
        if cfg.logits_via_embedding:
            return self.shared_embedding.attend(y) / jnp.sqrt(y.shape[-1]).astype(jnp.float32)
        return layers.DenseGeneral(cfg.vocab_size, dtype=jnp.float32, kernel_axes=("embed", "vocab"),
                                   name="logits_dense")(y)


class Transformer(nn.Module):
    """T5 v1.1 encoder-decoder with T5X's call signature and parameter tree."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.shared_embedding = layers.Embed(num_embeddings=cfg.vocab_size, features=cfg.emb_dim,
                                             dtype=_dtype(cfg), attend_dtype=jnp.float32,
                                             name="token_embedder")
        self.encoder = Encoder(config=cfg, shared_embedding=self.shared_embedding)
        self.decoder = Decoder(config=cfg, shared_embedding=self.shared_embedding)

    def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Optional[Array] = None,
               enable_dropout: bool = True, encoder_positions: Optional[Array] = None) -> Array:
        """int `[batch, len]` (0 = padding) -> encoded `[batch, len, emb]`.

        Positional order as T5X's `encode`; `encoder_positions` (packed inputs) comes last.
        """
        dtype = _dtype(self.config)
        nonpad = encoder_input_tokens > 0
        mask = layers.make_attention_mask(nonpad, nonpad, dtype=dtype)
        if encoder_segment_ids is not None:
            mask = layers.combine_masks(mask, layers.make_attention_mask(
                encoder_segment_ids, encoder_segment_ids, jnp.equal, dtype=dtype), dtype=dtype)
        return self.encoder(encoder_input_tokens, mask, encoder_positions, deterministic=not enable_dropout)

    def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None, decoder_positions: Optional[Array] = None,
               enable_dropout: bool = True, decode: bool = False,
               max_decode_length: Optional[int] = None) -> Array:
        """Decoder branch -> float32 logits `[batch, target_len, vocab]`.

        With `decode=True` the `cache` collection must be mutable. The first such call (full
        `[batch, max_decode_length]` inputs) creates the cache; later calls pass one token
        `[batch, 1]` plus `max_decode_length`, and targets' padding is not masked. Unlike T5X,
        the cache also keeps the cross-attention keys/values projected from the `encoded` of that
        first call, so it must be the real encoder output, not a dummy (`decoding.generate` does
        this; under `jit` the rest of that call is dead code and costs nothing).
        """
        dtype = _dtype(self.config)
        if decode:
            decoder_mask = None
            encoder_decoder_mask = layers.make_attention_mask(
                jnp.ones_like(decoder_target_tokens), encoder_input_tokens > 0, dtype=dtype)
        else:
            decoder_mask = layers.make_decoder_mask(decoder_target_tokens, dtype, decoder_segment_ids)
            encoder_decoder_mask = layers.make_attention_mask(
                decoder_target_tokens > 0, encoder_input_tokens > 0, dtype=dtype)
        if encoder_segment_ids is not None:
            if decode:
                raise ValueError("Packed inputs (encoder_segment_ids) cannot be used with decode=True; "
                                 "decode unpacked batches.")
            if decoder_segment_ids is None:
                raise ValueError("encoder_segment_ids given without decoder_segment_ids; packed "
                                 "batches need both (SeqIO's `*_segment_ids` features).")
            encoder_decoder_mask = layers.combine_masks(encoder_decoder_mask, layers.make_attention_mask(
                decoder_segment_ids, encoder_segment_ids, jnp.equal, dtype=dtype), dtype=dtype)
        return self.decoder(encoded, decoder_input_tokens, decoder_positions=decoder_positions,
                            decoder_mask=decoder_mask, encoder_decoder_mask=encoder_decoder_mask,
                            deterministic=not enable_dropout, decode=decode,
                            max_decode_length=max_decode_length)

    def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
                 decoder_target_tokens: Array, encoder_segment_ids: Optional[Array] = None,
                 decoder_segment_ids: Optional[Array] = None, encoder_positions: Optional[Array] = None,
                 decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
                 decode: bool = False, max_decode_length: Optional[int] = None) -> Array:
        """Full forward pass -> float32 logits `[batch, target_len, vocab]`.

        Args:
          encoder_input_tokens: int `[batch, input_len]`, 0 = padding.
          decoder_input_tokens: int `[batch, target_len]`, targets shifted right (starting with 0;
            in packed batches each segment starts with 0).
          decoder_target_tokens: int `[batch, target_len]`, 0 = padding (used for masks only).
          encoder_segment_ids, decoder_segment_ids: int `[batch, len]` segment ids of packed
            examples (1, 2, ...; 0 = padding) or None.
          encoder_positions, decoder_positions: int `[batch, len]` in-segment positions or None.
          enable_dropout: apply dropout (needs the 'dropout' RNG when dropout_rate > 0).
          decode, max_decode_length: see `decode`.
        """
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids=encoder_segment_ids,
                              encoder_positions=encoder_positions, enable_dropout=enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                           encoder_segment_ids=encoder_segment_ids, decoder_segment_ids=decoder_segment_ids,
                           decoder_positions=decoder_positions, enable_dropout=enable_dropout,
                           decode=decode, max_decode_length=max_decode_length)


def init_params(config: T5Config, rng: Optional[jax.Array] = None, input_len: int = 8,
                target_len: int = 8) -> Any:
    """Randomly initialised params (the `params` collection), boxed as `nn.LogicallyPartitioned`.

    Parameter shapes do not depend on `input_len`/`target_len`; they only size the dummy batch.
    """
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return _jitted_init(config, input_len, target_len)(rng)


@functools.lru_cache(maxsize=16)
def _jitted_init(config: T5Config, input_len: int, target_len: int):
    # Jitted: eager op-by-op init of a large tree is many times slower.
    enc = jnp.ones((1, input_len), jnp.int32)
    dec = jnp.ones((1, target_len), jnp.int32)
    model = Transformer(config)
    return jax.jit(lambda rng: model.init({"params": rng}, enc, dec, dec, enable_dropout=False)["params"])


def abstract_params(config: T5Config) -> Any:
    """Boxed `jax.ShapeDtypeStruct` tree of the params (no computation); for shardings/restores."""
    return jax.eval_shape(_jitted_init(config, 8, 8), jax.random.PRNGKey(0))


def unbox_params(params: Any) -> Any:
    """Plain array tree from boxed params (`nn.LogicallyPartitioned` leaves); plain trees pass."""
    return meta.unbox(params)


def param_logical_axes(config_or_params: Any) -> Any:
    """Tree of `PartitionSpec`s of logical axis names (e.g. `P('embed', 'mlp')`) per parameter."""
    boxed = abstract_params(config_or_params) if isinstance(config_or_params, T5Config) else config_or_params
    return nn.get_partition_spec(boxed)
