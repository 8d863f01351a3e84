"""Optimizers (optax) with T5X's finetuning defaults and the reference code's AdamW.

* ``adafactor`` — T5X finetuning (`t5x/configs/runs/finetune.gin` + `t5_1_1/*.gin`): constant
  learning rate 1e-3 (T5X's 'constant' factor ignores its warmup_steps), decay_rate 0.8,
  factored second moments (dims >= 128), no momentum (beta1 None), update clipping by RMS at
  1.0 (T5X's `clipping_threshold`), updates scaled by the parameter's RMS (floor 1e-3), eps
  1e-30, and no global gradient-norm clipping. `optax.adafactor` is a port of the same
  algorithm; it factors the two largest dims of each parameter rather than following T5X's
  `logical_factor_rules`, which chooses the same dims for T5's 2-D kernels.
* ``adamw`` — the reference implementation (HF `Seq2SeqTrainer` defaults it relies on): lr 5e-5,
  linear decay to 0 over the run, no warmup, global-norm gradient clipping 1.0, betas
  (0.9, 0.999), eps 1e-8, weight decay 0.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import optax

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("constant", "linear_decay")
_DEFAULTS = {
    # name: (learning_rate, schedule, grad_clip_norm)
    "adafactor": (1e-3, "constant", None),
    "adamw": (5e-5, "linear_decay", 1.0),
}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer settings; `None` fields take the named optimizer's defaults (see module doc).

    Attributes:
      name: "adafactor" (T5X) or "adamw" (reference code).
      learning_rate: peak learning rate.
      schedule: "constant" or "linear_decay" (to 0 at `total_steps`).
      warmup_steps: linear warmup from 0 (0 in both defaults).
      grad_clip_norm: global-norm gradient clipping, None for none.
      weight_decay: decoupled weight decay (AdamW only).
    """

    name: str = "adafactor"
    learning_rate: Optional[float] = None
    schedule: Optional[str] = None
    warmup_steps: int = 0
    grad_clip_norm: Optional[float] = None
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.name!r}; expected one of {OPTIMIZERS} (gin: OPTIMIZER).")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown learning-rate schedule {self.schedule!r}; expected one of {SCHEDULES} "
                             "(gin: LR_SCHEDULE).")

    def resolved(self) -> "OptimizerConfig":
        """This config with every None replaced by the optimizer's default."""
        lr, schedule, clip = _DEFAULTS[self.name]
        return dataclasses.replace(
            self,
            learning_rate=lr if self.learning_rate is None else self.learning_rate,
            schedule=schedule if self.schedule is None else self.schedule,
            grad_clip_norm=clip if self.grad_clip_norm is None else self.grad_clip_norm)


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Step -> learning rate, with optional linear warmup."""
    config = config.resolved()
    decay_steps = max(total_steps - config.warmup_steps, 1)
    if config.schedule == "constant":
        main = optax.constant_schedule(config.learning_rate)
    else:
        main = optax.linear_schedule(config.learning_rate, 0.0, decay_steps)
    if config.warmup_steps <= 0:
        return main
    warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
    return optax.join_schedules([warmup, main], [config.warmup_steps])


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation for `config` over a run of `total_steps` steps."""
    config = config.resolved()
    lr = learning_rate_schedule(config, total_steps)
    if config.name == "adafactor":
        tx = optax.adafactor(
            learning_rate=lr, min_dim_size_to_factor=128, decay_rate=0.8, decay_offset=0,
            multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None,
            eps=1e-30, factored=True)
    else:
        tx = optax.adamw(learning_rate=lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=config.weight_decay)
    if config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx
