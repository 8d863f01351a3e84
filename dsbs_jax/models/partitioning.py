"""Device meshes and logical-axis sharding rules (T5X's `t5x/partitioning.py`, the parts we need).

The network's parameters carry T5X's logical axis names (`vocab`, `embed`, `mlp`, `heads`,
`kv`, `joined_kv`, `relpos_buckets`); activations are constrained with `batch`, `length`,
`embed`, `heads`, `kv`, `mlp`. `STANDARD_LOGICAL_AXIS_RULES` maps those names onto a 2-D
`('data', 'model')` mesh exactly as T5X's `standard_logical_axis_rules()` does by default:
batch -> data, vocab/mlp/heads/joined_kv -> model, everything else replicated.

Typical use (a jitted step with explicit shardings)::

    mesh = create_mesh(data=4, model=2)
    boxed = network.init_params(config)                        # LogicallyPartitioned leaves
    shardings = params_shardings(boxed, mesh)                  # NamedSharding per param
    params = shard_params(boxed, mesh)                         # plain arrays, placed
    with activation_sharding(mesh):                            # activation constraints on
        logits = jax.jit(apply_fn, in_shardings=(shardings, batch_sharding(mesh)))(params, batch)
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence, Tuple

import flax.linen as nn
import jax
from flax.core import meta
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalAxisRules = Sequence[Tuple[str, Optional[str]]]

# T5X `standard_logical_axis_rules(activation_partitioning_dims=1, parameter_partitioning_dims=1)`.
STANDARD_LOGICAL_AXIS_RULES: Tuple[Tuple[str, Optional[str]], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("joined_kv", "model"),  # heads*head_dim of the 2-D attention kernels
    ("relpos_buckets", None),
    ("abspos_buckets", None),
    ("length", None),
    ("layers", None),
    ("stack", None),
    ("mlp_activations", None),
)

MESH_AXES = ("data", "model")
_REPLICATED_AXES = ("relpos_buckets", "abspos_buckets", "length", "layers", "stack", "mlp_activations")


def standard_logical_axis_rules(activation_partitioning_dims: int = 1, parameter_partitioning_dims: int = 1,
                                additional_rules: Optional[LogicalAxisRules] = None
                                ) -> Tuple[Tuple[str, Optional[str]], ...]:
    """T5X's rule sets: 2-D activation sharding puts `embed` on 'model', 2-D params put it on 'data'."""
    core = [("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"), ("kv", None),
            ("joined_kv", "model")]
    embed = {(1, 1): [("embed", None)], (2, 1): [("embed", "model")], (1, 2): [("embed", "data")],
             (2, 2): [("embed", "model"), ("embed", "data")]}
    key = (activation_partitioning_dims, parameter_partitioning_dims)
    if key not in embed:
        raise ValueError(f"standard_logical_axis_rules: activation_partitioning_dims and "
                         f"parameter_partitioning_dims must each be 1 or 2, found {key}.")
    replicated_axes = [rule for rule in STANDARD_LOGICAL_AXIS_RULES if rule[0] in _REPLICATED_AXES]
    rules = list(STANDARD_LOGICAL_AXIS_RULES) if key == (1, 1) else core + embed[key] + replicated_axes
    return tuple(rules) + tuple(additional_rules or ())


def create_mesh(data: int, model: int, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A `(data, model)` mesh with axis names ('data', 'model') over the first data*model devices.

    Axes are `AxisType.Auto` (GSPMD propagation, as T5X) rather than `jax.make_mesh`'s Explicit.
    """
    devices = list(jax.devices() if devices is None else devices)
    if data < 1 or model < 1:
        raise ValueError(f"create_mesh(data={data}, model={model}): both sizes must be >= 1.")
    if data * model > len(devices):
        raise ValueError(
            f"create_mesh(data={data}, model={model}) needs {data * model} devices but {len(devices)} "
            f"are available ({devices[0].platform}); lower the mesh sizes (e.g. --mesh_data / --mesh_model) "
            "or, on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax.")
    return jax.make_mesh((data, model), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2,
                         devices=devices[:data * model])


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def logical_to_mesh_sharding(logical: Any, mesh: Mesh,
                             rules: LogicalAxisRules = STANDARD_LOGICAL_AXIS_RULES) -> Any:
    """Tree of logical `PartitionSpec`s (or of boxed params) -> tree of `NamedSharding`s.

    Example: `P('embed', 'mlp')` -> `NamedSharding(mesh, P(None, 'model'))` under the standard rules.
    """
    if any(isinstance(leaf, meta.AxisMetadata)
           for leaf in jax.tree_util.tree_leaves(logical, is_leaf=lambda x: isinstance(x, meta.AxisMetadata))):
        logical = nn.get_partition_spec(logical)
    return nn.logical_to_mesh_sharding(logical, mesh, tuple(rules))


def params_shardings(boxed_params: Any, mesh: Mesh,
                     rules: LogicalAxisRules = STANDARD_LOGICAL_AXIS_RULES) -> Any:
    """`NamedSharding` for every parameter of a boxed tree (e.g. `network.abstract_params(config)`).

    The result has the structure of the *unboxed* params, so it can be passed as `in_shardings`
    / `out_shardings` for plain parameter trees.
    """
    return logical_to_mesh_sharding(nn.get_partition_spec(boxed_params), mesh, rules)


def shard_params(boxed_params: Any, mesh: Mesh, rules: LogicalAxisRules = STANDARD_LOGICAL_AXIS_RULES,
                 shardings: Optional[Any] = None) -> Any:
    """Unboxes `boxed_params` and places each array on `mesh` by its logical axes.

    Plain (unboxed) trees need `shardings` from `params_shardings(network.abstract_params(cfg), mesh)`.
    """
    if shardings is None:
        shardings = params_shardings(boxed_params, mesh, rules)
    return jax.device_put(meta.unbox(boxed_params), shardings)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of `[batch, ...]` input arrays: batch split over 'data', replicated over 'model'."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding (scalars, RNG keys, step counters)."""
    return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: LogicalAxisRules = STANDARD_LOGICAL_AXIS_RULES) -> Iterator[None]:
    """Activates `mesh` and the logical rules so the model's activation constraints take effect.

    Without this context the network's `with_logical_constraint` calls are no-ops (XLA then
    propagates shardings from the inputs alone); trace the jitted function inside it.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield


def describe(shardings: Any) -> str:
    """One line per parameter, `path: PartitionSpec`, for logs and reports."""
    flat = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))[0]
    lines = []
    for path, sharding in flat:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        lines.append(f"{name}: {sharding.spec}")
    return "\n".join(lines)


__all__ = ["STANDARD_LOGICAL_AXIS_RULES", "MESH_AXES", "standard_logical_axis_rules", "create_mesh",
           "logical_to_mesh_sharding", "params_shardings", "shard_params", "batch_sharding", "replicated",
           "activation_sharding", "describe"]
