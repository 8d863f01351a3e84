"""The pure train step `(state, batch) -> (state, metrics)`, jitted with explicit shardings.

Mixture batches carry SeqIO `EncDecFeatureConverter` features (`encoder_input_tokens`,
`decoder_input_tokens`, `decoder_target_tokens`, `decoder_loss_weights` and, when packed,
`*_segment_ids`/`*_positions`), each `[batch, length]`. Paired batches carry the label pair under
those names and the rationale pair under the same names prefixed with `rationale_`
(see `input_pipeline.PairedFeatureConverter`).

Gradient accumulation splits the batch into `num_microbatches` equal slices and sums their
gradients in a `lax.scan`. Normalizers (token counts) are computed on the whole batch first, so
the accumulated gradient equals the full-batch gradient for every normalization mode.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dsbs_jax.train import losses
from dsbs_jax.train.losses import LossConfig
from dsbs_jax.train.train_state import LogicalRules, TrainState

Batch = Mapping[str, jax.Array]
Metrics = Dict[str, jax.Array]
_MODEL_ARGS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
               "encoder_segment_ids", "decoder_segment_ids", "encoder_positions", "decoder_positions")


def _model_inputs(batch: Batch, prefix: str) -> Dict[str, jax.Array]:
    return {k: batch[prefix + k] for k in _MODEL_ARGS if prefix + k in batch}


def _parts(batch: Batch, config: LossConfig) -> Tuple[Tuple[str, float, str], ...]:
    """(feature prefix, loss weight, metric name) of each target the loss mode trains on."""
    if config.mode == "paired":
        return (("", config.alpha, "label"), ("rationale_", 1.0 - config.alpha, "rationale"))
    return (("", 1.0, "targets"),)


def normalizers(batch: Batch, config: LossConfig) -> Dict[str, Tuple[jax.Array, jax.Array]]:
    """prefix -> (per-token weights [batch, length], scalar normalizer) for the whole batch."""
    lnf = "NUM_REAL_TARGET_TOKENS" if config.mode == "paired" else config.loss_normalizing_factor
    return {prefix: losses.loss_weights_and_normalizer(batch, lnf, prefix)
            for prefix, _, _ in _parts(batch, config)}


def loss_and_metrics(params: Any, *, apply_fn: Callable, batch: Batch, weights: Mapping[str, Any],
                     config: LossConfig, dropout_rng: Optional[jax.Array],
                     enable_dropout: bool) -> Tuple[jax.Array, Metrics]:
    """The scalar training loss of `batch` and unnormalized metric sums.

    Args:
      weights: prefix -> (token weights, normalizer) from `normalizers` of the *whole* batch.
    """
    total = jnp.float32(0.0)
    metrics: Metrics = {}
    for prefix, coef, name in _parts(batch, config):
        rngs = {"dropout": jax.random.fold_in(dropout_rng, len(prefix))} if enable_dropout else {}
        logits = apply_fn({"params": params}, **_model_inputs(batch, prefix),
                          enable_dropout=enable_dropout, rngs=rngs)
        token_weights, norm = weights[prefix]
        loss_sum, z_sum, correct = losses.weighted_token_loss(
            logits, batch[prefix + "decoder_target_tokens"], token_weights, config)
        total = total + coef * loss_sum / norm
        metrics[f"{name}/loss_sum"] = loss_sum
        metrics[f"{name}/z_loss_sum"] = z_sum
        metrics[f"{name}/correct"] = correct
        metrics[f"{name}/weight_sum"] = jnp.sum(token_weights)
        metrics[f"{name}/tokens"] = jnp.sum(batch[prefix + "decoder_target_tokens"] > 0).astype(jnp.float32)
    return total, metrics


def _split_microbatches(tree: Any, num: int) -> Any:
    return jax.tree.map(lambda x: x.reshape((num, x.shape[0] // num) + x.shape[1:]), tree)


def train_step(state: TrainState, batch: Batch, *, apply_fn: Callable, loss_config: LossConfig,
               num_microbatches: int = 1, dropout_seed: int = 0,
               enable_dropout: bool = True) -> Tuple[TrainState, Metrics]:
    """One optimizer update on `batch` (pure; jit it with `make_train_step`).

    Returns:
      (new state, metrics), all float32 scalars: `loss` (the optimized value), and per target
      (`targets`, or `label` and `rationale` in paired mode) `{name}/loss` and `{name}/z_loss` (the
      loss-weighted mean per token, incl. z-loss: the plain token mean unless AVERAGE_PER_SEQUENCE
      weights sequences equally), `{name}/accuracy` (token accuracy), `{name}/tokens`; `grad_norm`.
    """
    weights = normalizers(batch, loss_config)
    dropout_rng = jax.random.fold_in(jax.random.PRNGKey(dropout_seed), state.step)
    grad_fn = jax.value_and_grad(functools.partial(
        loss_and_metrics, apply_fn=apply_fn, config=loss_config, enable_dropout=enable_dropout), has_aux=True)

    if num_microbatches <= 1:
        (loss, sums), grads = grad_fn(state.params, batch=batch, weights=weights, dropout_rng=dropout_rng)
    else:
        micro = _split_microbatches({"batch": dict(batch), "weights": {p: w for p, (w, _) in weights.items()}},
                                    num_microbatches)
        norms = {p: n for p, (_, n) in weights.items()}

        def run_micro(mb, i):
            mb_weights = {p: (mb["weights"][p], norms[p]) for p in norms}
            return grad_fn(state.params, batch=mb["batch"], weights=mb_weights,
                           dropout_rng=jax.random.fold_in(dropout_rng, i))

        def body(carry, xs):
            i, mb = xs
            (l, s), g = run_micro(mb, i)
            return jax.tree.map(jnp.add, carry, (l, s, g)), None

        first = jax.tree.map(lambda x: x[0], micro)
        (l_shape, s_shape), g_shape = jax.eval_shape(run_micro, first, 0)
        init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (l_shape, s_shape, g_shape))
        (loss, sums, grads), _ = jax.lax.scan(body, init, (jnp.arange(num_microbatches), micro))

    new_state = state.apply_gradients(grads)
    metrics: Metrics = {"loss": loss}
    for key in [k for k in sums if k.endswith("/loss_sum")]:
        name = key[: -len("/loss_sum")]
        tokens = jnp.maximum(sums[f"{name}/tokens"], 1.0)
        weight_sum = jnp.where(sums[f"{name}/weight_sum"] > 0, sums[f"{name}/weight_sum"], 1.0)
        metrics[f"{name}/loss"] = sums[key] / weight_sum
        metrics[f"{name}/z_loss"] = sums[f"{name}/z_loss_sum"] / weight_sum
        metrics[f"{name}/accuracy"] = sums[f"{name}/correct"] / tokens
        metrics[f"{name}/tokens"] = sums[f"{name}/tokens"]
    metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    return new_state, metrics


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dim on the mesh's data axis, the rest replicated."""
    return NamedSharding(mesh, P("data"))


def make_train_step(model: nn.Module, loss_config: LossConfig, state_shardings: TrainState, mesh: Mesh,
                    rules: LogicalRules, *, num_microbatches: int = 1, dropout_seed: int = 0,
                    enable_dropout: bool = True) -> Callable[[TrainState, Batch], Tuple[TrainState, Metrics]]:
    """`train_step` jitted with params/opt state in `state_shardings` and the batch on 'data'.

    The returned function donates the input state (updated in place) and returns replicated
    metrics. Logical activation constraints inside the model resolve through `rules`.
    """
    def step(state, batch):
        with nn.logical_axis_rules(rules):
            return train_step(state, batch, apply_fn=model.apply, loss_config=loss_config,
                              num_microbatches=num_microbatches, dropout_seed=dropout_seed,
                              enable_dropout=enable_dropout)

    jitted = jax.jit(step, in_shardings=(state_shardings, batch_sharding(mesh)),
                     out_shardings=(state_shardings, NamedSharding(mesh, P())), donate_argnums=(0,))

    def run(state: TrainState, batch: Batch) -> Tuple[TrainState, Metrics]:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return jitted(state, batch)

    run.jitted = jitted  # for lowering/cost analysis in benchmarks
    return run
