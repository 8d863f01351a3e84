"""Flax T5 v1.1 student (T5X parameter layout), KV-cache decoding, partitioning and loaders.

Public names are exported lazily (PEP 562) so that `import dsbs_jax.models.config` stays cheap
and free of JAX for data-only tools:

    from dsbs_jax.models import Transformer, init_params, generate, create_mesh
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "T5Config": "config",
    "t5_1_1_config": "config",
    "Transformer": "network",
    "init_params": "network",
    "abstract_params": "network",
    "unbox_params": "network",
    "param_logical_axes": "network",
    "generate": "decoding",
    "sequence_log_probs": "decoding",
    "STANDARD_LOGICAL_AXIS_RULES": "partitioning",
    "create_mesh": "partitioning",
    "logical_to_mesh_sharding": "partitioning",
    "params_shardings": "partitioning",
    "shard_params": "partitioning",
    "activation_sharding": "partitioning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
