"""Token cross-entropy losses: T5X's weighted loss and the reference code's paired loss.

Two loss modes (`dsbs_jax/methods.py` picks one per method):

* ``"target"`` (T5X's behaviour): one target per example (standard finetuning, distillation, the
  single-task ablation, or a SeqIO mixture that samples `predict:` and `explain:` examples into
  the same batch), and the loss is T5X's
  `compute_weighted_cross_entropy`: by default the *sum* of token losses over every target
  token in the batch (`loss_normalizing_factor=None`), or that sum divided by a constant, by the
  number of real target tokens ('NUM_REAL_TARGET_TOKENS'), by the padded token count
  ('NUM_TOTAL_TARGET_TOKENS'), or a per-sequence mean ('AVERAGE_PER_SEQUENCE').
* ``"paired"`` (the reference implementation's behaviour): every example carries both targets
  for the same x and the step computes ``alpha * L_label + (1 - alpha) * L_rationale``, each the
  mean token cross-entropy over its own real target tokens in the batch (the paper writes
  ``L_label + lambda * L_rationale`` with ``lambda = (1 - alpha) / alpha``).

How a mixture rate maps to alpha. With mixture rates ``r_label`` and ``r_rationale`` (sampling
proportions, summing to 1) and token-sum normalization, the expected gradient weight of each
task is proportional to ``rate * mean target length``. Writing ``T_label`` and ``T_rationale`` for
the mean target lengths in tokens, the mixture behaves like the paired loss with::

    alpha_eff = r_label * T_label / (r_label * T_label + r_rationale * T_rationale)

so equal rates (SeqIO's default for `{D}_dsbs_{L}`) give rationales ``T_rationale / T_label``
times the label's weight: a 40-token rationale against a 2-token label makes alpha_eff ~ 0.05,
far from the reference's 0.5. Token-sum normalization is what lets long rationales weigh more:
every target *token* counts once, so a task's share of the loss grows with its target length.
To reproduce alpha with a mixture, set the rates ``r_label / r_rationale = alpha * T_rationale /
((1 - alpha) * T_label)``, or use 'AVERAGE_PER_SEQUENCE' normalization (then each example counts
once and alpha_eff = r_label), or use the paired mode, which computes the reference loss exactly.
Note that even with matched alpha a mixture sees each task on different examples per step (it
samples), whereas the paired mode puts both targets of the same x in every step.

All functions are pure and jittable; shapes are `[batch, length]` for tokens and weights and
`[batch, length, vocab]` for logits.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

LossNormalizingFactor = Optional[Union[float, int, str]]
SPECIAL_NORMALIZING_FACTORS = ("NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE")
LOSS_MODES = ("target", "paired")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss hyper-parameters (T5X's names and defaults, plus the paired mode's alpha).

    Attributes:
      mode: "target" (one target per example, T5X's loss) or "paired" (alpha-weighted label
        and rationale losses on the same inputs; needs the `{D}_paired_{L}` task).
      alpha: weight of the label loss in paired mode (the reference code's 0.5).
      z_loss: coefficient of T5X's auxiliary `z_loss * log(Z)^2` term (T5X default 1e-4).
      label_smoothing: T5X's label smoothing constant.
      loss_normalizing_factor: target mode only. None (sum over target tokens, T5X's
        default), a number to divide the sum by, or one of SPECIAL_NORMALIZING_FACTORS.
    """

    mode: str = "target"
    alpha: float = 0.5
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    loss_normalizing_factor: LossNormalizingFactor = None

    def __post_init__(self):
        if self.mode not in LOSS_MODES:
            raise ValueError(f"LossConfig.mode={self.mode!r}: expected one of {LOSS_MODES} "
                             "(set by the method: dsbs_jax/methods.py).")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"LossConfig.alpha={self.alpha}: expected a value in [0, 1] (gin: ALPHA).")
        lnf = self.loss_normalizing_factor
        if isinstance(lnf, str) and lnf.upper() not in SPECIAL_NORMALIZING_FACTORS:
            raise ValueError(f"LossConfig.loss_normalizing_factor={lnf!r}: expected None, a number or "
                             f"one of {SPECIAL_NORMALIZING_FACTORS} (gin: LOSS_NORMALIZING_FACTOR).")


def token_cross_entropy(logits: jax.Array, targets: jax.Array, *, z_loss: float = 0.0,
                        label_smoothing: float = 0.0) -> Tuple[jax.Array, jax.Array]:
    """Per-token cross-entropy with T5X's z-loss and label smoothing.

    Matches `t5x.losses.compute_weighted_cross_entropy` per token (including subtracting the
    entropy of the smoothed target distribution) without materialising one-hot targets.

    Args:
      logits: [batch, length, vocab] float.
      targets: [batch, length] int.
      z_loss: coefficient of `log(Z)^2`.
      label_smoothing: mass spread uniformly over the other `vocab - 1` classes.

    Returns:
      (loss, z_loss_term), both [batch, length] float32; `loss` already includes the z-loss term.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    target_logp = target_logit - log_z
    if label_smoothing:
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (vocab - 1)
        sum_logp = jnp.sum(logits, axis=-1) - vocab * log_z
        loss = -((confidence - low) * target_logp + low * sum_logp)
        # T5X subtracts the smoothed distribution's entropy so a perfect model has loss 0.
        loss -= -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
    else:
        loss = -target_logp
    z_term = z_loss * jnp.square(log_z)
    return loss + z_term, z_term


def _per_sequence_weights(weights: jax.Array, segment_ids: Optional[jax.Array]) -> jax.Array:
    """Weights divided by the weight sum of their own (packed) sequence: [batch, length]."""
    if segment_ids is None:
        norm = jnp.sum(weights, axis=-1, keepdims=True)
    else:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        norm = jnp.einsum("bls,bs->bl", same.astype(weights.dtype), weights)
    return jnp.where(norm > 0, weights / jnp.where(norm > 0, norm, 1.0), 0.0)


def loss_weights_and_normalizer(
        batch: Mapping[str, jax.Array], loss_normalizing_factor: LossNormalizingFactor,
        prefix: str = "") -> Tuple[jax.Array, jax.Array]:
    """T5X's `get_loss_normalizing_factor_and_weights` for features named `{prefix}decoder_*`.

    Returns:
      (weights [batch, length] float32, normalizer scalar float32). The loss is
      `sum(token_loss * weights) / normalizer`; normalizer 1 means "no normalization".
    """
    targets = batch[f"{prefix}decoder_target_tokens"]
    weights = batch.get(f"{prefix}decoder_loss_weights")
    weights = (targets > 0) if weights is None else weights
    weights = weights.astype(jnp.float32)
    lnf = loss_normalizing_factor
    if lnf is None:
        return weights, jnp.float32(1.0)
    if not isinstance(lnf, str):
        return weights, jnp.float32(lnf)
    lnf = lnf.upper()
    if lnf == "NUM_REAL_TARGET_TOKENS":
        return weights, jnp.maximum(jnp.sum(weights), 1.0)
    if lnf == "NUM_TOTAL_TARGET_TOKENS":
        return weights, jnp.float32(np.prod(targets.shape))
    if lnf == "AVERAGE_PER_SEQUENCE":
        weights = _per_sequence_weights(weights, batch.get(f"{prefix}decoder_segment_ids"))
        return weights, jnp.maximum(jnp.sum(weights), 1.0)
    raise ValueError(f"Unsupported loss_normalizing_factor {loss_normalizing_factor!r}; expected None, "
                     f"a number or one of {SPECIAL_NORMALIZING_FACTORS}.")


def weighted_token_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                        config: LossConfig) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Sums of the weighted token loss, z-loss and correct predictions.

    Args:
      logits: [batch, length, vocab]; targets: [batch, length] int; weights: [batch, length].

    Returns:
      (loss_sum, z_loss_sum, num_correct) scalars (unnormalized).
    """
    loss, z_term = token_cross_entropy(logits, targets, z_loss=config.z_loss,
                                       label_smoothing=config.label_smoothing)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return jnp.sum(loss * weights), jnp.sum(z_term * weights), jnp.sum(correct * (weights > 0))
