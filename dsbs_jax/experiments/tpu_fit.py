"""Will a T5X run fit its TPU slice? Per-chip memory of parameters, optimizer state and activations.

    from dsbs_jax.experiments import tpu_fit
    slice_ = tpu_fit.tpu_slice("v4-32")                      # 16 chips of 32 GiB
    estimate = tpu_fit.estimate(t5_1_1_config("xl"), batch_size=64,
                                lengths={"inputs": 256, "targets": 128}, num_partitions=4,
                                paired=True, tpu=slice_)
    estimate.fits, estimate.total_bytes

T5X's `PjitPartitioner(num_partitions=p)` lays the slice's devices out as a (data, model) mesh
with `model = p`. Under T5X's standard logical-axis rules every parameter with a `vocab`, `mlp`,
`heads` or `joined_kv` axis is split p ways over `model` and replicated over `data`; layer norms
are replicated. AdamW keeps two float32 moments shaped and sharded like the parameters (Adafactor
would factor them), and the gradients are a third such copy during the update. Those three are
exact: `tests/test_t5x_rehearsal.py` checks them against the arrays of a real T5X checkpoint.

Activations are an estimate (T5X's T5 1.1 network saves them in bfloat16, without rematerialization):
per token and layer, the values the backward pass keeps (layer inputs, q/k/v, the attention
output, the gated-GELU MLP's three `mlp`-wide values) plus the attention probabilities, and the
float32 logits of the targets. The paired loss (methods `dsbs`, `dsbs_llm`) runs the model twice
per example, so it doubles them. XLA's own buffers come on top: a run is refused when the
estimate exceeds `USABLE_HBM_FRACTION` of the chip's memory.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Dict, Mapping, Optional, Tuple

from dsbs_jax.models.config import T5Config

GiB = 1024 ** 3
# Left for XLA's temporaries, the program and fragmentation.
USABLE_HBM_FRACTION = 0.9
ACTIVATION_BYTES = 2  # T5X's T5 1.1 gin: dtype = 'bfloat16'
PARAM_BYTES = 4  # parameters and AdamW moments are float32 (RestoreCheckpointConfig.dtype)


class FitError(ValueError):
    """A run cannot fit its slice, or its batch does not divide the slice's data-parallel mesh."""


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """A Cloud TPU slice as JAX sees it: `devices` devices of `hbm_bytes` each."""

    name: str
    devices: int
    hbm_bytes: int

    @property
    def hbm_gib(self) -> float:
        return self.hbm_bytes / GiB


# Accelerator type prefix -> (cores in the name per JAX device, HBM per JAX device in GiB).
# v2/v3 count TensorCores and each core is a device; v4/v5p chips are one megacore device of two
# cores; v5e (v5litepod) and v6e name chips. HBM per chip from Cloud TPU's system architecture pages.
_GENERATIONS: Mapping[str, Tuple[int, int]] = {
    "v2": (1, 8), "v3": (1, 16), "v4": (2, 32), "v5p": (2, 95), "v5litepod": (1, 16), "v5e": (1, 16),
    "v6e": (1, 32),
}


def tpu_slice(accelerator_type: str) -> TpuSlice:
    """`v4-32` -> 16 devices of 32 GiB; one-line ValueError for names it does not know."""
    match = re.fullmatch(r"(v\d+[a-z]*|v5litepod)-(\d+)", accelerator_type.strip())
    if not match or match.group(1) not in _GENERATIONS:
        raise FitError(f"--tpu {accelerator_type!r}: expected an accelerator type such as v4-8, v4-32, v5p-16, "
                       f"v5litepod-16 or v6e-8 (known generations: {', '.join(_GENERATIONS)})")
    cores_per_device, hbm_gib = _GENERATIONS[match.group(1)]
    size = int(match.group(2))
    if size % cores_per_device:
        raise FitError(f"--tpu {accelerator_type}: {match.group(1)} sizes count TensorCores, two per chip; "
                       f"{size} is odd")
    return TpuSlice(accelerator_type, size // cores_per_device, hbm_gib * GiB)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one training run; `params` etc. are exact, `activations` estimated."""

    params: int
    optimizer: int
    gradients: int
    activations: int
    data_parallel: int
    model_parallel: int
    hbm_bytes: int

    @property
    def total(self) -> int:
        return self.params + self.optimizer + self.gradients + self.activations

    @property
    def fits(self) -> bool:
        return self.total <= USABLE_HBM_FRACTION * self.hbm_bytes

    def row(self) -> Dict[str, str]:
        gib = lambda n: f"{n / GiB:.1f}"  # noqa: E731
        return {"mesh (data x model)": f"{self.data_parallel} x {self.model_parallel}", "params": gib(self.params),
                "AdamW": gib(self.optimizer), "grads": gib(self.gradients), "activations": gib(self.activations),
                "total GiB": gib(self.total), "HBM GiB": gib(self.hbm_bytes), "fits": "yes" if self.fits else "NO"}


@functools.lru_cache(maxsize=None)  # abstract evaluation of an XXL network takes a second; sizes repeat
def _model_axis_sizes(config: T5Config) -> Dict[str, Tuple[Tuple[int, ...], Tuple[Optional[str], ...]]]:
    """Parameter name -> (shape, logical axis names), from the network itself (no arrays made)."""
    import jax
    from flax.core import meta

    from dsbs_jax.models import network

    abstract = network.abstract_params(config)
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract, is_leaf=lambda x: isinstance(x, meta.Partitioned))[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        value = leaf.unbox() if isinstance(leaf, meta.Partitioned) else leaf
        axes = tuple(leaf.names) if isinstance(leaf, meta.Partitioned) else (None,) * len(value.shape)
        out[name] = (tuple(value.shape), axes)
    return out


def partition_specs(config: T5Config) -> Dict[str, Tuple[Optional[str], ...]]:
    """Parameter name -> mesh axes per dimension under T5X's standard rules (1-D parameter partitioning)."""
    from dsbs_jax.models.partitioning import STANDARD_LOGICAL_AXIS_RULES

    rules = dict(STANDARD_LOGICAL_AXIS_RULES)
    return {name: tuple(rules.get(axis) if axis else None for axis in axes)
            for name, (_, axes) in _model_axis_sizes(config).items()}


def param_bytes_per_device(config: T5Config, num_partitions: int) -> Tuple[int, int]:
    """(bytes of all parameters, bytes one device holds) in float32."""
    total = per_device = 0
    specs = partition_specs(config)
    for name, (shape, _) in _model_axis_sizes(config).items():
        size = math.prod(shape) * PARAM_BYTES
        total += size
        sharded = any(axis == "model" for axis in specs[name])
        per_device += size // num_partitions if sharded else size
    return total, per_device


def activation_bytes(config: T5Config, per_device_batch: int, lengths: Mapping[str, int], num_partitions: int,
                     paired: bool) -> int:
    """Estimated bytes the backward pass keeps for one device's share of a batch (see module doc)."""
    d, f = config.emb_dim, config.mlp_dim
    heads_per_device = max(config.num_heads // num_partitions, 1)
    f_per_device = f // num_partitions
    kv_per_device = heads_per_device * config.head_dim
    inputs, targets = lengths["inputs"], lengths["targets"]
    # Per token and layer: layer-norm input and output, q, k, v, attention output, residual (d or kv
    # wide), three mlp-wide values (wi_0, wi_1, their gated product), and the attention probabilities.
    encoder_token = 3 * d + 4 * kv_per_device + 3 * f_per_device + heads_per_device * inputs
    decoder_token = 5 * d + 8 * kv_per_device + 3 * f_per_device + heads_per_device * (targets + inputs)
    per_example = (config.num_encoder_layers * inputs * encoder_token +
                   config.num_decoder_layers * targets * decoder_token) * ACTIVATION_BYTES
    # The logits, in bfloat16 and again in float32 for the softmax cross-entropy.
    per_example += targets * (config.vocab_size // num_partitions) * (ACTIVATION_BYTES + 4)
    return per_device_batch * per_example * (2 if paired else 1)


def estimate(config: T5Config, *, batch_size: int, lengths: Mapping[str, int], num_partitions: int,
             paired: bool, tpu: TpuSlice) -> MemoryEstimate:
    """The per-device memory of training `config` on `tpu`; FitError when the mesh cannot be built."""
    if tpu.devices % num_partitions:
        raise FitError(f"{tpu.name} has {tpu.devices} devices, which num_partitions={num_partitions} does not divide "
                       "(--num_partitions)")
    data_parallel = tpu.devices // num_partitions
    if batch_size % data_parallel:
        raise FitError(f"BATCH_SIZE {batch_size} does not divide over the {data_parallel}-way data-parallel mesh of "
                       f"{tpu.name} ({tpu.devices} devices / num_partitions {num_partitions}); pass --batch_size as a "
                       f"multiple of {data_parallel} or raise --num_partitions")
    _, params = param_bytes_per_device(config, num_partitions)
    return MemoryEstimate(params=params, optimizer=2 * params, gradients=params,
                          activations=activation_bytes(config, batch_size // data_parallel, lengths, num_partitions,
                                                       paired),
                          data_parallel=data_parallel, model_parallel=num_partitions, hbm_bytes=tpu.hbm_bytes)


def markdown_table(rows: Mapping[str, MemoryEstimate]) -> str:
    """One line per run (or size): the per-device memory and whether it fits."""
    if not rows:
        return ""
    columns = list(next(iter(rows.values())).row())
    lines = ["| run | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    lines += [f"| {name} | " + " | ".join(e.row().values()) + " |" for name, e in rows.items()]
    return "\n".join(lines) + "\n"


PAPER_SLICES = ("v4-8", "v4-32", "v5litepod-16")


def paper_table(slices: Tuple[str, ...] = PAPER_SLICES, dataset: str = "cqa") -> str:
    """Every T5 1.1 size with its size file's batch and num_partitions, Distilling step-by-step's paired
    loss and `dataset`'s lengths, on each slice: the table in docs/tpu.md."""
    from dsbs_jax import gin_gen
    from dsbs_jax.models.config import t5_1_1_config

    setting = gin_gen.DATASETS[dataset]
    lengths = {"inputs": setting.inputs, "targets": setting.targets}
    header = ["size (batch, num_partitions)", "slice", "mesh (data x model)", "params", "AdamW", "grads",
              "activations (est.)", "total GiB", "HBM GiB", "fits"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for size in gin_gen.SIZES:
        defaults = gin_gen.size_settings(size)
        label = f"{size} ({defaults.batch_size}, {defaults.num_partitions})"
        for name in slices:
            try:
                row = estimate(t5_1_1_config(size), batch_size=defaults.batch_size, lengths=lengths,
                               num_partitions=defaults.num_partitions, paired=True, tpu=tpu_slice(name)).row()
                cells = list(row.values())
            except FitError as error:
                cells = ["–"] * (len(header) - 3) + [f"no: {str(error).split(',')[0].split(' (')[0]}"]
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(paper_table(), end="")
