"""Real T5X trains the paper's loss: a T5X model class whose loss is Distilling step-by-step's.

    # gin/t5x/paired.gin (included by the generated `dsbs`/`dsbs_llm` experiment files)
    from dsbs_jax import t5x_model
    MODEL = @t5x_model.PairedEncoderDecoderModel()

`PairedEncoderDecoderModel` is T5X's `EncoderDecoderModel` with the paired feature converter
(`input_pipeline.paired_converter_cls`: both targets of every example side by side) and
`loss = alpha * L_label + (1 - alpha) * L_rationale`, each the mean token cross-entropy over its
own targets, computed by the same function as the embedded trainer's step
(`train_step.loss_and_metrics`). Batches without rationale features (gold-label evaluation,
`train_eval` of label tasks) keep T5X's own loss.

`PairedLossMixin` holds the loss and needs nothing from T5X, so the tests check it on machines
without T5X; the T5X class exists only where `t5x` imports.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import jax

from dsbs_jax.train import train_step
from dsbs_jax.train.losses import LossConfig

RATIONALE_PREFIX = "rationale_"


def is_paired_batch(batch: Mapping[str, Any]) -> bool:
    return f"{RATIONALE_PREFIX}decoder_target_tokens" in batch


class PairedLossMixin:
    """The paired loss for a T5X-style model: needs `self.module` (a Flax T5 whose `apply` takes
    T5X's keyword arguments) and `self.paired_loss_config`.
    """

    module: Any
    paired_loss_config: LossConfig

    def paired_loss(self, params: Any, batch: Mapping[str, jax.Array],
                    dropout_rng: Optional[jax.Array]) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """(scalar loss, unnormalized metric sums) of a paired batch, as the embedded trainer computes it."""
        config = self.paired_loss_config
        return train_step.loss_and_metrics(
            params, apply_fn=self.module.apply, batch=batch, weights=train_step.normalizers(batch, config),
            config=config, dropout_rng=dropout_rng, enable_dropout=dropout_rng is not None)


def paired_loss_config(alpha: float, z_loss: float, label_smoothing: float) -> LossConfig:
    return LossConfig(mode="paired", alpha=alpha, z_loss=z_loss, label_smoothing=label_smoothing)


try:
    from t5x import models as _t5x_models
except ImportError:  # T5X is an optional extra: `pip install -e ".[t5x]"`
    _t5x_models = None

if _t5x_models is not None:
    from clu import metrics as clu_metrics
    from t5x import metrics as t5x_metrics

    from dsbs_jax.train.input_pipeline import paired_converter_cls

    class PairedEncoderDecoderModel(PairedLossMixin, _t5x_models.EncoderDecoderModel):
        """T5X's EncoderDecoderModel trained with Distilling step-by-step's paired loss.

        Args (beyond EncoderDecoderModel's): alpha, the label loss weight (the paper's 0.5).
        `z_loss` and `label_smoothing` apply to both halves; `loss_normalizing_factor` is
        ignored for paired batches (each half is a mean over its own target tokens).
        """

        FEATURE_CONVERTER_CLS = paired_converter_cls()

        def __init__(self, *args, alpha: float = 0.5, **kwargs):
            super().__init__(*args, **kwargs)
            self.paired_loss_config = paired_loss_config(alpha, self._z_loss, self._label_smoothing)

        def loss_fn(self, params, batch, dropout_rng):
            if not is_paired_batch(batch):
                return super().loss_fn(params, batch, dropout_rng)
            loss, sums = self.paired_loss(params, batch, dropout_rng)
            metrics = {"loss": t5x_metrics.AveragePerStep(total=loss)}
            for name in ("label", "rationale"):
                metrics[f"{name}/loss"] = clu_metrics.Average(
                    total=sums[f"{name}/loss_sum"], count=jax.numpy.maximum(sums[f"{name}/weight_sum"], 1.0))
                metrics[f"{name}/accuracy"] = clu_metrics.Average(
                    total=sums[f"{name}/correct"], count=jax.numpy.maximum(sums[f"{name}/tokens"], 1.0))
            return loss, metrics
