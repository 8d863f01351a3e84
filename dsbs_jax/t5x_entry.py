"""`python -m t5x.train` / `t5x.eval` as one process of several, with a bounded wait for a dead peer.

    python -m dsbs_jax.t5x_entry train --coordinator_address 127.0.0.1:1234 --process_count 2 \
        --process_index 0 --heartbeat_timeout_seconds 20 -- --gin_file=... --gin.MODEL_DIR=...

T5X's own `--multiprocess_gpu` calls `jax.distributed.initialize` with JAX's default heartbeat
timeout (100 s), and the CPU rehearsal of a multi-host slice needs gloo collectives. This entry point
initializes `jax.distributed` itself (heartbeat timeout from the flag; `JAX_CPU_COLLECTIVES_IMPLEMENTATION`
from the environment, `gloo` on CPU), then runs T5X's module as `__main__` with the remaining flags,
exactly as `python -m t5x.train` would. When a peer dies, JAX's coordination service stops this
process within about the heartbeat timeout instead of leaving it blocked in a collective; the grid
runner (`dsbs_jax.experiments.t5x_runner`) reports the lost peer in one line.
On Cloud TPU, run T5X directly: JAX finds the slice's hosts by itself.
"""
from __future__ import annotations

import argparse
import runpy
import sys
from typing import Optional, Sequence

ENTRY_POINTS = {"train": "t5x.train", "eval": "t5x.eval"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsbs_jax.t5x_entry", description=__doc__.split("\n\n")[0],
                                     epilog="T5X's own flags follow a `--`.")
    parser.add_argument("entry", choices=sorted(ENTRY_POINTS))
    parser.add_argument("--coordinator_address", required=True, help="host:port of process 0")
    parser.add_argument("--process_count", type=int, required=True)
    parser.add_argument("--process_index", type=int, required=True)
    parser.add_argument("--heartbeat_timeout_seconds", type=int, default=100,
                        help="a peer silent this long is declared dead and the job stops (JAX's default: 100)")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, flags = parser.parse_args(argv[:split]), argv[split + 1:]

    import jax

    jax.distributed.initialize(coordinator_address=args.coordinator_address, num_processes=args.process_count,
                               process_id=args.process_index,
                               heartbeat_timeout_seconds=args.heartbeat_timeout_seconds)
    module = ENTRY_POINTS[args.entry]
    sys.argv = [module, *flags]
    # T5X's gin files `import __main__ as train_script`: run the module as __main__, as `python -m` does.
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
