"""T5 v1.1 model sizes as frozen dataclasses (the dimensions of T5X's `t5_1_1/*.gin`)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import gin


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of the T5 v1.1 encoder-decoder (same fields as T5X's `T5Config`).

    `dtype` is the activation dtype ('float32' or 'bfloat16'); parameters are always float32.
    """

    vocab_size: int = 32128
    emb_dim: int = 512
    num_heads: int = 6
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    head_dim: int = 64
    mlp_dim: int = 1024
    mlp_activations: Sequence[str] = ("gelu", "linear")
    dropout_rate: float = 0.0
    logits_via_embedding: bool = False
    dtype: str = "float32"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6

    def replace(self, **changes) -> "T5Config":
        return dataclasses.replace(self, **changes)


# Published T5 1.1 dimensions (t5x/examples/t5/t5_1_1/{small,base,large,xl,xxl}.gin).
_SIZES = {
    "tiny": dict(emb_dim=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
                 head_dim=8, mlp_dim=64),
    "small": dict(emb_dim=512, num_heads=6, num_encoder_layers=8, num_decoder_layers=8,
                  head_dim=64, mlp_dim=1024),
    "base": dict(emb_dim=768, num_heads=12, num_encoder_layers=12, num_decoder_layers=12,
                 head_dim=64, mlp_dim=2048),
    "large": dict(emb_dim=1024, num_heads=16, num_encoder_layers=24, num_decoder_layers=24,
                  head_dim=64, mlp_dim=2816),
    "xl": dict(emb_dim=2048, num_heads=32, num_encoder_layers=24, num_decoder_layers=24,
               head_dim=64, mlp_dim=5120),
    "xxl": dict(emb_dim=4096, num_heads=64, num_encoder_layers=24, num_decoder_layers=24,
                head_dim=64, mlp_dim=10240),
}
SIZE_NAMES = tuple(_SIZES)


@gin.configurable
def t5_1_1_config(size: str = "small", **overrides) -> T5Config:
    """The T5 v1.1 config of a named size, e.g. `t5_1_1_config('base', dropout_rate=0.1)`."""
    if size not in _SIZES:
        raise ValueError(f"Unknown T5 1.1 size {size!r}; expected one of {SIZE_NAMES}.")
    return T5Config(**{**_SIZES[size], **overrides})
