"""Building blocks of the T5 v1.1 network, laid out parameter-for-parameter like T5X.

The modules mirror `t5x/examples/t5/layers.py` (same module names, parameter names, stored
kernel shapes, logical axis names and initialisers) so that a T5X checkpoint restores into
`network.Transformer` without renaming. Parameters are created with
`nn.with_logical_partitioning`, i.e. they come out of `init` boxed as
`nn.LogicallyPartitioned` carrying T5X's logical axis names; `nn.get_partition_spec` and
`partitioning.py` turn those into shardings.

Deliberate differences from T5X (same parameters, same math):
* `Embed` gathers rows with `jnp.take` instead of T5X's one-hot matmul, which costs
  `vocab / emb_dim` times more FLOPs than the lookup on CPU/GPU.
* `RelativePositionBiases` gathers bias rows (bucket ids are static numpy constants) instead
  of T5X's one-hot contraction, and accepts explicit per-token positions (packed examples).
* `DenseGeneral` over trailing axes is one 2-D GEMM (`matmul`) that accumulates in float32 and
  casts to the activation dtype (T5X's bfloat16 `dot_general` does the same on TPU; XLA:CPU runs
  a bfloat16-output GEMM in float32 instead). On CPU its backward is a custom VJP with row-major
  GEMMs (same gradients, benchmarks/RESULTS.md).
* The softmax over attention logits is computed in float32 whatever the activation dtype
  (T5X does that only with `float32_attention_logits=True`).
* The autoregressive cache stores self-attention keys/values as `[batch, heads, length, head_dim]`
  and writes with `dynamic_update_slice` (T5X transposes for TPU and scatters via a one-hot);
  cross-attention keys/values of the encoder output are projected once when the cache is
  initialised instead of at every decoding step, and kept as `[batch, heads, head_dim, length]`.
* In decoding, the self-attention `query|key|value` and the gated MLP's `wi_0|wi_1` run as one
  GEMM each (`fused_matmul` over the unchanged kernels); training keeps separate GEMMs.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# T5X's initialisers (t5x/examples/t5/layers.py).
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
attention_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
# A large negative number rather than -inf so fully masked rows (padding) stay finite.
_MASK_VALUE = -1e10


def _param(module: nn.Module, name: str, init: Initializer, shape: Tuple[int, ...],
           axes: Tuple[str, ...]) -> Array:
    """A float32 parameter boxed with T5X's logical axis names; returns the raw value."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


def _constrain(x: Array, axes: Tuple[Optional[str], ...]) -> Array:
    """Activation sharding hint by logical names; a no-op unless a mesh and rules are active."""
    return nn.with_logical_constraint(x, axes)


def _dot(x: Array, kernel: Array) -> Array:
    """`x @ kernel` in `x.dtype`, accumulated in float32."""
    return jnp.dot(x, kernel.astype(x.dtype), preferred_element_type=jnp.float32).astype(x.dtype)


@jax.custom_vjp
def _cpu_matmul(x: Array, kernel: Array) -> Array:
    return _dot(x, kernel)


def _cpu_matmul_fwd(x: Array, kernel: Array):
    w = kernel.astype(x.dtype)
    y = _dot(x, w)
    # The kernel gradient dW = x^T g contracts over the token axis; XLA:CPU runs that
    # transposed-operand GEMM 10-40 % slower than a row-major one (benchmarks/RESULTS.md), so the
    # forward keeps x^T instead of x (one pass over the activations; the barrier keeps XLA from
    # folding the transpose back into the dot).
    return y, (lax.optimization_barrier(x.T), w)


def _cpu_matmul_bwd(residuals, g: Array):
    x_t, w = residuals
    dx = lax.dot_general(g, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32).astype(g.dtype)
    dw = jnp.dot(x_t, g, preferred_element_type=jnp.float32)
    return dx, dw


_cpu_matmul.defvjp(_cpu_matmul_fwd, _cpu_matmul_bwd)


def matmul(x: Array, kernel: Array) -> Array:
    """`x [..., in] @ kernel [in, out]` in `x.dtype` with float32 accumulation; float32 kernel gradient.

    Same math everywhere. XLA:CPU computes bfloat16 GEMMs natively only when they accumulate to
    float32 (a bfloat16-output dot runs as a float32 one, at half the rate), and on CPU the
    backward's GEMMs are arranged for it (`_cpu_matmul_fwd`); elsewhere XLA picks layouts itself.
    """
    if jax.default_backend() != "cpu" or kernel.dtype != jnp.float32:
        return _dot(x, kernel)
    lead = x.shape[:-1]
    y = _cpu_matmul(x.reshape((-1, x.shape[-1])), kernel)
    return y.reshape(lead + (kernel.shape[-1],))


class DenseGeneral(nn.Module):
    """Bias-free linear map over `axis` of the input to output `features`.

    Like T5X, the kernel is stored flattened as `[prod(in_dims), prod(features)]` (e.g. the
    attention query kernel is `[emb_dim, num_heads * head_dim]`) and reshaped at use time.
    """

    features: Union[int, Sequence[int]]
    axis: Union[int, Sequence[int]] = -1
    dtype: DType = jnp.float32
    kernel_init: Initializer = default_kernel_init
    kernel_axes: Tuple[str, ...] = ()

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        features = tuple(self.features) if isinstance(self.features, Sequence) else (self.features,)
        axis = tuple(self.axis) if isinstance(self.axis, Sequence) else (self.axis,)
        inputs = jnp.asarray(inputs, self.dtype)
        axis = tuple(ax % inputs.ndim for ax in axis)
        in_dims = tuple(inputs.shape[ax] for ax in axis)
        kernel = _param(self, "kernel", self.kernel_init,
                        (int(np.prod(in_dims)), int(np.prod(features))), self.kernel_axes)
        if axis == tuple(range(inputs.ndim - len(axis), inputs.ndim)):  # trailing axes: one 2-D GEMM
            flat = inputs.reshape(inputs.shape[:inputs.ndim - len(axis)] + (kernel.shape[0],))
            return matmul(flat, kernel).reshape(flat.shape[:-1] + features)
        kernel = jnp.reshape(jnp.asarray(kernel, self.dtype), in_dims + features)
        return lax.dot_general(inputs, kernel, ((axis, tuple(range(len(axis)))), ((), ())))


class Kernel(nn.Module):
    """A 2-D `DenseGeneral`'s kernel alone: same name, stored shape, logical axes and initialiser.

    For callers that run several projections of one input as one GEMM (`fused_matmul`) while the
    parameter tree stays T5X's.
    """

    shape: Tuple[int, int]
    kernel_init: Initializer = default_kernel_init
    kernel_axes: Tuple[str, ...] = ()

    @nn.compact
    def __call__(self) -> Array:
        return _param(self, "kernel", self.kernel_init, self.shape, self.kernel_axes)


def fused_matmul(x: Array, kernels: Sequence[Array]) -> Tuple[Array, ...]:
    """`tuple(matmul(x, k) for k in kernels)` as one GEMM against the kernels side by side.

    Meant for decoding, where the kernels are loop-invariant: XLA hoists the concatenation out of
    the decoding loop, so each step runs one wider GEMM (a GEMV at batch 1) instead of several
    narrow ones (benchmarks/RESULTS.md). In a train step the concatenation would be paid every
    step, which costs as much as it saves on CPU, so training keeps separate GEMMs.
    """
    y = matmul(x, jnp.concatenate(kernels, axis=1))
    splits = np.cumsum([k.shape[1] for k in kernels])[:-1]
    return tuple(jnp.split(y, splits, axis=-1))


class Embed(nn.Module):
    """Token embedding `[vocab, emb_dim]` (logical axes ('vocab', 'embed')), looked up by gather."""

    num_embeddings: int
    features: int
    dtype: DType = jnp.float32
    attend_dtype: DType = jnp.float32
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

    def setup(self):
        self.embedding = _param(self, "embedding", self.embedding_init,
                                (self.num_embeddings, self.features), ("vocab", "embed"))

    def __call__(self, inputs: Array) -> Array:
        """int tokens `[...]` -> embeddings `[..., features]` in `dtype`."""
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError(f"Embed expects integer token ids, found dtype {inputs.dtype}.")
        output = jnp.take(self.embedding, inputs, axis=0).astype(self.dtype)
        return _constrain(output, ("batch", "length", "embed"))

    def attend(self, query: Array) -> Array:
        """`[..., features]` -> logits `[..., num_embeddings]` against the embedding table."""
        return jnp.dot(query.astype(self.attend_dtype), jnp.asarray(self.embedding, self.attend_dtype).T)


class LayerNorm(nn.Module):
    """T5 layer norm (RMSNorm): no mean subtraction, no bias; computed in float32."""

    epsilon: float = 1e-6
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x, jnp.float32)
        scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
        y = x * lax.rsqrt(jnp.mean(lax.square(x), axis=-1, keepdims=True) + self.epsilon)
        return y.astype(self.dtype) * jnp.asarray(scale, self.dtype)


def relative_position_bucket(relative_position, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128):
    """T5's bucketing of `memory_position - query_position` into `[0, num_buckets)` (numpy ints)."""
    relative_position = np.asarray(relative_position)
    ret = np.zeros_like(relative_position, dtype=np.int32)
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    val_if_large = max_exact + (
        np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
        / np.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(np.int32)
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    return ret + np.where(is_small, n, val_if_large).astype(np.int32)


class RelativePositionBiases(nn.Module):
    """T5 relative position attention bias, one table `rel_embedding [heads, buckets]` per stack."""

    num_buckets: int
    max_distance: int
    num_heads: int
    dtype: DType = jnp.float32
    embedding_init: Initializer = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")

    @nn.compact
    def __call__(self, qlen: int, klen: int, bidirectional: bool = True,
                 query_positions: Optional[Array] = None,
                 key_positions: Optional[Array] = None) -> Array:
        """Attention bias `[1, heads, qlen, klen]`, or `[batch, heads, qlen, klen]` given positions.

        Args:
          qlen, klen: static query / key lengths.
          bidirectional: False for causal (decoder) attention: keys after the query share bucket 0.
          query_positions, key_positions: optional int `[batch, qlen]` / `[batch, klen]` positions
            (packed examples). Without them positions are `arange(len)`; within one packed segment
            both give the same distances, so this only matters for non-contiguous positions.
        """
        table = _param(self, "rel_embedding", self.embedding_init,
                       (self.num_heads, self.num_buckets), ("heads", "relpos_buckets"))
        table = jnp.asarray(table, self.dtype)
        if query_positions is None and key_positions is None:
            rel = np.arange(klen)[None, :] - np.arange(qlen)[:, None]
            buckets = relative_position_bucket(rel, bidirectional, self.num_buckets, self.max_distance)
            return jnp.take(table, buckets, axis=1)[None]  # [1, heads, q, k]
        if query_positions is None:
            query_positions = jnp.broadcast_to(jnp.arange(qlen), key_positions.shape[:1] + (qlen,))
        if key_positions is None:
            key_positions = jnp.broadcast_to(jnp.arange(klen), query_positions.shape[:1] + (klen,))
        # Bucket every possible distance once (static), then gather per token pair.
        span = max(qlen, klen)
        buckets = relative_position_bucket(np.arange(-(span - 1), span), bidirectional,
                                           self.num_buckets, self.max_distance)
        by_distance = jnp.take(table, buckets, axis=1)  # [heads, 2*span-1]
        rel = key_positions[:, None, :] - query_positions[:, :, None]  # [batch, q, k]
        rel = jnp.clip(rel + (span - 1), 0, 2 * span - 2)
        return jnp.moveaxis(jnp.take(by_distance, rel, axis=1), 0, 1)  # [batch, heads, q, k]


def make_attention_mask(query_input: Array, key_input: Array,
                        pairwise_fn: Callable = jnp.multiply, dtype: DType = jnp.float32) -> Array:
    """`[batch, q]`, `[batch, k]` -> mask `[batch, 1, q, k]` (1 = may attend)."""
    mask = pairwise_fn(query_input[..., :, None], key_input[..., None, :])
    return mask[..., None, :, :].astype(dtype)


def make_causal_mask(x: Array, dtype: DType = jnp.float32) -> Array:
    """`[batch, len]` -> lower-triangular mask `[batch, 1, len, len]`."""
    idxs = jnp.broadcast_to(jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape)
    return make_attention_mask(idxs, idxs, jnp.greater_equal, dtype=dtype)


def combine_masks(*masks: Optional[Array], dtype: DType = jnp.float32) -> Optional[Array]:
    """Logical AND of the masks that are not None (None if all are)."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    mask = masks[0]
    for other in masks[1:]:
        mask = jnp.logical_and(mask, other)
    return mask.astype(dtype)


def make_decoder_mask(decoder_target_tokens: Array, dtype: DType,
                      decoder_segment_ids: Optional[Array] = None) -> Array:
    """Causal AND non-padding AND same-segment mask `[batch, 1, len, len]` (T5X semantics)."""
    masks = [make_causal_mask(decoder_target_tokens, dtype),
             make_attention_mask(decoder_target_tokens > 0, decoder_target_tokens > 0, dtype=dtype)]
    if decoder_segment_ids is not None:
        masks.append(make_attention_mask(decoder_segment_ids, decoder_segment_ids, jnp.equal, dtype))
    return combine_masks(*masks, dtype=dtype)


class MultiHeadDotProductAttention(nn.Module):
    """T5 multi-head attention: no biases, no 1/sqrt(head_dim) at use time.

    As in T5X, the 1/sqrt(head_dim) scaling is folded into the query kernel's initialiser.
    Parameters: `query`, `key`, `value` kernels `[emb, heads*head_dim]` (axes
    ('embed', 'joined_kv')) and `out` `[heads*head_dim, emb]` (('joined_kv', 'embed')).

    With `decode=True` the module keeps a `cache` collection. The first call (no cache yet)
    creates it; later calls take one query position each. Self-attention caches
    `cached_key`/`cached_value` `[batch, heads, max_len, head_dim]` plus `cache_index`;
    cross-attention (`static_kv=True`) caches the projected encoder keys/values of that first
    call and reuses them (as `[batch, heads, head_dim, length]`), so the cache must be
    initialised with the real encoder output. Head-major, because the per-step dots read each
    head's keys/values contiguously: a length-major cache made XLA:CPU transpose (copy) every
    layer's whole cache at every step, half of a batch-64 step's time. The cross-attention cache
    puts the key axis last because XLA:CPU's batched one-query dots read it about 20 % faster
    that way (benchmarks/RESULTS.md); the self-attention cache keeps the key axis second so that
    each step writes one contiguous row per head.
    """

    num_heads: int
    head_dim: int
    dtype: DType = jnp.float32
    dropout_rate: float = 0.0
    kernel_init: Initializer = attention_kernel_init
    static_kv: bool = False

    @nn.compact
    def __call__(self, inputs_q: Array, inputs_kv: Array, mask: Optional[Array] = None,
                 bias: Optional[Array] = None, *, decode: bool = False,
                 deterministic: bool = False) -> Array:
        """`[batch, q, emb]`, `[batch, k, emb]` -> `[batch, q, emb]`.

        `mask` `[batch|1, 1, q, k]` (1 = attend) and `bias` `[batch|1, heads, q, k]` are
        broadcast over heads/batch. In single-step decoding `bias` is the full
        `[1, heads, max_len, max_len]` matrix and the row of the current step is taken here.
        """
        projection = functools.partial(DenseGeneral, axis=-1, features=(self.num_heads, self.head_dim),
                                       kernel_axes=("embed", "joined_kv"), dtype=self.dtype)
        depth_scaling = jnp.sqrt(self.head_dim).astype(jnp.float32)
        query_init = lambda *args: self.kernel_init(*args) / depth_scaling  # noqa: E731

        heads = ("batch", "length", "heads", "kv")
        fused_qkv = decode and not self.static_kv and inputs_q is inputs_kv
        if fused_qkv:  # decoding self-attention: q, k, v of the one new token in one GEMM
            shape = (inputs_q.shape[-1], self.num_heads * self.head_dim)
            kernels = [Kernel(shape, init, ("embed", "joined_kv"), name=name)() for name, init in
                       (("query", query_init), ("key", self.kernel_init), ("value", self.kernel_init))]
            q, k, v = fused_matmul(jnp.asarray(inputs_q, self.dtype), kernels)
            split_heads = lambda t: _constrain(  # noqa: E731
                t.reshape(t.shape[:-1] + (self.num_heads, self.head_dim)), heads)
            query, fused_kv = split_heads(q), (split_heads(k), split_heads(v))
        else:
            query = _constrain(projection(kernel_init=query_init, name="query")(inputs_q), heads)

        def project_kv():
            if fused_qkv:
                return fused_kv
            k = projection(kernel_init=self.kernel_init, name="key")(inputs_kv)
            v = projection(kernel_init=self.kernel_init, name="value")(inputs_kv)
            return _constrain(k, heads), _constrain(v, heads)

        if decode and self.static_kv:
            if self.has_variable("cache", "cached_key"):
                key = self.get_variable("cache", "cached_key")
                value = self.get_variable("cache", "cached_value")
            else:
                key, value = project_kv()
                key, value = _features_major(key), _features_major(value)
                self.put_variable("cache", "cached_key", key)
                self.put_variable("cache", "cached_value", value)
        elif decode:
            key, value = project_kv()
            key, value = _heads_major(key), _heads_major(value)
            is_initialized = self.has_variable("cache", "cached_key")
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
            cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
            if is_initialized:
                batch, num_heads, length, head_dim = cached_key.value.shape
                if query.shape != (batch, 1, num_heads, head_dim):
                    raise ValueError(
                        f"Autoregressive cache expects one query position, shape "
                        f"{(batch, 1, num_heads, head_dim)}, found {query.shape}.")
                cur_index = cache_index.value
                key = lax.dynamic_update_slice(cached_key.value, key.astype(cached_key.value.dtype),
                                               (0, 0, cur_index, 0))
                value = lax.dynamic_update_slice(cached_value.value, value.astype(cached_value.value.dtype),
                                                 (0, 0, cur_index, 0))
                cached_key.value, cached_value.value = key, value
                cache_index.value = cur_index + 1
                # Attend only to positions written so far.
                step_mask = jnp.broadcast_to(jnp.arange(length) <= cur_index, (batch, 1, 1, length))
                mask = combine_masks(mask, step_mask)
                if bias is not None:
                    bias = lax.dynamic_slice_in_dim(bias, cur_index, 1, axis=-2)
        else:
            key, value = project_kv()

        attention_bias = None
        if mask is not None:
            attention_bias = jnp.where(mask > 0, 0.0, _MASK_VALUE).astype(jnp.float32)
        if bias is not None:
            attention_bias = bias.astype(jnp.float32) if attention_bias is None else attention_bias + bias

        # Decoding caches are head-major, cross-attention's with the key axis last (class docstring).
        kv = ("bhdk" if self.static_kv else "bhkd") if decode else "bkhd"
        logits = jnp.einsum(f"bqhd,{kv}->bhqk", query, key, preferred_element_type=jnp.float32)
        if attention_bias is not None:
            logits = logits + attention_bias
        weights = jax.nn.softmax(logits).astype(self.dtype)
        if not deterministic and self.dropout_rate > 0.0:
            # T5X drops whole query rows' weights for a key (broadcast over the query axis).
            keep_prob = 1.0 - self.dropout_rate
            shape = list(weights.shape)
            shape[-2] = 1
            keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
            weights = weights * (keep.astype(self.dtype) / jnp.asarray(keep_prob, self.dtype))
        x = jnp.einsum(f"bhqk,{kv}->bqhd", weights, value.astype(self.dtype),
                       preferred_element_type=jnp.float32).astype(self.dtype)
        return DenseGeneral(features=inputs_q.shape[-1], axis=(-2, -1), kernel_init=self.kernel_init,
                            kernel_axes=("joined_kv", "embed"), dtype=self.dtype, name="out")(x)


def _heads_major(x: Array) -> Array:
    """`[batch, length, heads, head_dim]` -> `[batch, heads, length, head_dim]`."""
    return jnp.swapaxes(x, 1, 2)


def _features_major(x: Array) -> Array:
    """`[batch, length, heads, head_dim]` -> `[batch, heads, head_dim, length]`."""
    return jnp.transpose(x, (0, 2, 3, 1))


def _activation(name: Union[str, Callable]) -> Callable:
    if name == "linear":
        return lambda x: x
    if callable(name):
        return name
    if isinstance(name, str) and hasattr(nn, name):
        return getattr(nn, name)
    raise ValueError(f"Unknown MLP activation {name!r}; expected 'linear' or a flax.linen function name "
                     "such as 'gelu' or 'relu' (T5Config.mlp_activations).")


class MlpBlock(nn.Module):
    """T5 feed-forward block: `wi` (or `wi_0`, `wi_1`, ... gated), elementwise product, `wo`."""

    intermediate_dim: int = 2048
    activations: Sequence[Union[str, Callable]] = ("relu",)
    kernel_init: Initializer = default_kernel_init
    intermediate_dropout_rate: float = 0.1
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool = False, fused: bool = False) -> Array:
        """`[batch, len, emb]` -> `[batch, len, emb]`.

        `fused=True` runs the gated input projections (`wi_0`, `wi_1`, ...) as one GEMM
        (`fused_matmul`; what decoding asks for), with the same parameters and results.
        """
        names = ["wi"] if len(self.activations) == 1 else [f"wi_{i}" for i in range(len(self.activations))]
        if fused and len(names) > 1:
            shape = (inputs.shape[-1], self.intermediate_dim)
            kernels = [Kernel(shape, self.kernel_init, ("embed", "mlp"), name=name)() for name in names]
            hidden = fused_matmul(jnp.asarray(inputs, self.dtype), kernels)
        else:
            hidden = [DenseGeneral(self.intermediate_dim, dtype=self.dtype, kernel_init=self.kernel_init,
                                   kernel_axes=("embed", "mlp"), name=name)(inputs) for name in names]
        x = None
        for h, act in zip(hidden, self.activations):
            h = _activation(act)(h)
            x = h if x is None else x * h
        x = nn.Dropout(rate=self.intermediate_dropout_rate, broadcast_dims=(-2,))(
            x, deterministic=deterministic)
        x = _constrain(x, ("batch", "length", "mlp"))
        return DenseGeneral(inputs.shape[-1], dtype=self.dtype, kernel_init=self.kernel_init,
                            kernel_axes=("mlp", "embed"), name="wo")(x)
