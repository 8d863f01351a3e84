"""The train state (step, params, optimizer state) and its shardings on a device mesh.

Parameters are sharded by their logical axis names (T5X's `nn.LogicallyPartitioned` boxes from
`network.init_params`) through the logical-axis rules. Optimizer state is sharded like the
parameter it belongs to: leaves with the parameter's shape take its sharding (AdamW's mu/nu),
Adafactor's factored row/column statistics take it with the reduced axis dropped, and scalars
(counts) are replicated. That mirrors T5X, which derives optimizer-state axes from parameter axes.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

LogicalRules = Sequence[Tuple[str, Any]]


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint must hold to resume training exactly.

    Attributes:
      step: int32 scalar, number of optimizer updates applied.
      params: plain (unboxed) float32 parameter tree, T5X layout.
      opt_state: optax state for `tx`.
      tx: the optax transformation (static; not saved).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def apply_gradients(self, grads: Any) -> "TrainState":
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)

    def to_saveable(self) -> dict:
        """The pytree that checkpoints store (no static fields)."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    def from_saveable(self, tree: dict) -> "TrainState":
        return self.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A fresh state at step 0 from plain params."""
    return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                      opt_state=tx.init(params), tx=tx)


def param_shardings(boxed_abstract_params: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """NamedSharding per parameter from its logical axes (a plain tree, same structure as unboxed params)."""
    logical_specs = nn.get_partition_spec(boxed_abstract_params)
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def _axis_size(mesh: Mesh, entry: Any) -> int:
    names = entry if isinstance(entry, tuple) else (entry,)
    return int(np.prod([mesh.shape[n] for n in names if n is not None]))


def _derived_sharding(leaf_shape: Tuple[int, ...], param_shape: Tuple[int, ...],
                      param_sharding: NamedSharding) -> NamedSharding:
    """Sharding of an optimizer-state leaf that belongs to a parameter (see module doc)."""
    mesh = param_sharding.mesh
    spec = tuple(param_sharding.spec) + (None,) * (len(param_shape) - len(param_sharding.spec))
    if tuple(leaf_shape) == tuple(param_shape):
        return param_sharding
    if len(leaf_shape) == len(param_shape) - 1:
        for removed in range(len(param_shape)):
            kept = param_shape[:removed] + param_shape[removed + 1:]
            if tuple(kept) == tuple(leaf_shape):
                new_spec = spec[:removed] + spec[removed + 1:]
                # A factored statistic is tiny; shard it only where the mesh divides it.
                new_spec = tuple(s if s is None or dim % _axis_size(mesh, s) == 0 else None
                                 for s, dim in zip(new_spec, leaf_shape))
                return NamedSharding(mesh, P(*new_spec))
    return NamedSharding(mesh, P())


def opt_state_shardings(tx: optax.GradientTransformation, abstract_params: Any, p_shardings: Any,
                        mesh: Mesh) -> Any:
    """NamedSharding per optimizer-state leaf, derived from the owning parameter's sharding."""
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    replicated = NamedSharding(mesh, P())

    def per_param(leaf, param, sharding):
        if not hasattr(leaf, "shape"):
            return leaf
        return _derived_sharding(tuple(leaf.shape), tuple(param.shape), sharding)

    shardings = optax.tree_map_params(
        tx, per_param, abstract_opt, abstract_params, p_shardings,
        transform_non_params=lambda leaf: replicated if hasattr(leaf, "shape") else leaf)
    # Leaves optax could not attribute to a parameter (e.g. scalars) are replicated.
    return jax.tree.map(lambda s: s if isinstance(s, NamedSharding) else replicated, shardings,
                        is_leaf=lambda s: isinstance(s, NamedSharding))


def state_shardings(tx: optax.GradientTransformation, boxed_abstract_params: Any, mesh: Mesh,
                    rules: LogicalRules) -> TrainState:
    """A TrainState whose leaves are the NamedShardings of the real state's leaves."""
    abstract_params = nn.unbox(boxed_abstract_params)
    p_shardings = param_shardings(boxed_abstract_params, mesh, rules)
    return TrainState(step=NamedSharding(mesh, P()), params=p_shardings,
                      opt_state=opt_state_shardings(tx, abstract_params, p_shardings, mesh), tx=tx)


def abstract_state(tx: optax.GradientTransformation, boxed_abstract_params: Any,
                   shardings: Optional[TrainState] = None) -> TrainState:
    """ShapeDtypeStructs (with shardings when given) of the state; the restore target."""
    abstract_params = nn.unbox(boxed_abstract_params)
    state = jax.eval_shape(lambda p: create_train_state(p, tx), abstract_params)
    if shardings is None:
        return state
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)


def init_state_sharded(init_params_fn: Callable[[], Any], tx: optax.GradientTransformation,
                       shardings: TrainState) -> TrainState:
    """Initialises params and optimizer state directly into their shardings (no host copy)."""
    def init():
        return create_train_state(nn.unbox(init_params_fn()), tx)

    return jax.jit(init, out_shardings=shardings)()


def state_from_params(params: Any, tx: optax.GradientTransformation, shardings: TrainState) -> TrainState:
    """A step-0 state from host params (e.g. a pretrained checkpoint), placed on the mesh."""
    params = jax.device_put(params, shardings.params)
    return jax.jit(lambda p: create_train_state(p, tx), out_shardings=shardings)(params)
