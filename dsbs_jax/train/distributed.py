"""Multi-host start-up: `jax.distributed.initialize` with the arguments the launcher provides.

    JAX_COORDINATOR_ADDRESS=10.0.0.2:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 dsbs train ...
    dsbs train ... --coordinator_address=10.0.0.2:1234 --process_count=2 --process_index=0   # T5X's flag names

Where the settings come from, first match wins:

* flags (`dsbs train --coordinator_address --process_count --process_index`, T5X's names) or the
  environment (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`; what
  `launch/train_gpu.sh` exports). Any of them marks a multi-host run; a missing one is left to
  JAX's cluster detection, and it is an error when no cluster is detected either.
* SLURM (`srun`: SLURM_JOB_ID, SLURM_NTASKS > 1, ...), Open MPI (`mpirun`: OMPI_MCA_orte_hnp_uri,
  OMPI_COMM_WORLD_SIZE > 1) and multi-host Cloud TPU (TPU_WORKER_HOSTNAMES with several hosts, or
  MEGASCALE_COORDINATOR_ADDRESS): `jax.distributed.initialize()` reads everything itself.
* otherwise one process: nothing to initialize.

Must run before anything asks JAX for its devices.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping, Optional

log = logging.getLogger(__name__)

COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
_SLURM_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """Arguments of `jax.distributed.initialize`; None = JAX detects it from the cluster."""

    source: str  # "flags/env", "slurm", "ompi" or "cloud_tpu"
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


def _int(value: Optional[str], name: str) -> Optional[int]:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer; set it to a number (e.g. {name}=0).") from None


def _cluster(env: Mapping[str, str]) -> Optional[str]:
    """The launcher JAX can read on its own, if this process was started by one with several hosts."""
    if all(k in env for k in _SLURM_ENV) and (_int(env["SLURM_NTASKS"], "SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and (_int(env.get("OMPI_COMM_WORLD_SIZE"), "OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "ompi"
    if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "cloud_tpu"
    return None


def detect(env: Optional[Mapping[str, str]] = None, *, coordinator_address: Optional[str] = None,
           num_processes: Optional[int] = None, process_id: Optional[int] = None) -> Optional[DistributedSettings]:
    """The settings of this process (flags override `env`), or None for a one-process run.

    Raises:
      ValueError: a multi-host run is asked for but incomplete, naming what to set.
    """
    env = os.environ if env is None else env
    address = coordinator_address or env.get(COORDINATOR_ENV) or None
    count = num_processes if num_processes is not None else _int(env.get(NUM_PROCESSES_ENV), NUM_PROCESSES_ENV)
    index = process_id if process_id is not None else _int(env.get(PROCESS_ID_ENV), PROCESS_ID_ENV)
    cluster = _cluster(env)
    if address is None and count is None and index is None:
        return DistributedSettings(cluster) if cluster else None
    if count == 1 and not address:
        return None  # JAX_NUM_PROCESSES=1: explicitly one process
    if cluster is None:
        missing = [name for name, value in ((f"{COORDINATOR_ENV} (or --coordinator_address)", address),
                                            (f"{NUM_PROCESSES_ENV} (or --process_count)", count),
                                            (f"{PROCESS_ID_ENV} (or --process_index)", index)) if value is None]
        if missing:
            raise ValueError(f"Multi-host run without {', '.join(missing)}: outside SLURM, Open MPI and Cloud TPU "
                             "JAX needs the coordinator's host:port, the number of processes and this process's "
                             "index; set all three.")
    if count is not None and index is not None and not 0 <= index < count:
        raise ValueError(f"{PROCESS_ID_ENV}={index} is not in 0..{count - 1} ({NUM_PROCESSES_ENV}={count}).")
    return DistributedSettings("flags/env", address, count, index)


def maybe_initialize(settings: Optional[DistributedSettings] = None) -> Optional[DistributedSettings]:
    """Initializes `jax.distributed` once for a multi-host run (settings default: `detect()`)."""
    import jax

    settings = detect() if settings is None else settings
    if settings is None or jax.distributed.is_initialized():
        return settings
    log.info("jax.distributed.initialize from %s: coordinator %s, %s processes, process %s", settings.source,
             settings.coordinator_address or "(detected)", settings.num_processes or "(detected)",
             "(detected)" if settings.process_id is None else settings.process_id)
    jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                               num_processes=settings.num_processes, process_id=settings.process_id)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return settings


FLAGS = {"--coordinator_address": "coordinator_address", "--process_count": "num_processes",
         "--process_index": "process_id"}


def pop_flags(argv: "list[str] | tuple[str, ...]") -> "tuple[dict, list[str]]":
    """Splits T5X's multi-host flags (`--coordinator_address=H:P --process_count=N --process_index=I`,
    `--multiprocess_gpu` accepted and implied) off `argv`: (detect() keyword arguments, the rest)."""
    found: dict = {}
    rest: list = []
    args = list(argv)
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        if name in FLAGS:
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"Flag {name} needs a value.")
                value, i = args[i + 1], i + 1
            key = FLAGS[name]
            found[key] = value if key == "coordinator_address" else _int(value, name)
        elif name != "--multiprocess_gpu":
            rest.append(args[i])
        i += 1
    return found, rest
