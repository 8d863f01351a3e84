"""A clean screen for every `dsbs` command: library chatter off unless `--verbose`.

    from dsbs_jax import quiet
    quiet.silence()            # before TensorFlow, JAX or SeqIO are imported

`dsbs_jax.cli` calls `silence()` before it imports a subcommand, so every command gets it;
`dsbs <command> --verbose` (or DSBS_VERBOSE=1) leaves everything as the libraries print it.
Three layers, because the chatter comes from three places:

- environment variables read by C++ at import (TensorFlow's `TF_CPP_MIN_LOG_LEVEL`, gRPC, and,
  on machines without an NVIDIA device, `CUDA_VISIBLE_DEVICES=""` so TensorFlow's CUDA build does
  not print `cuInit` errors; `JAX_PLATFORMS=cpu` where no GPU or TPU device file exists);
- Python loggers: absl (SeqIO's "uncached FunctionDataset" warnings), and the root logger's
  spurious `ERROR root: Path not found` from `tf.io.gfile` probing and gin's
  `INFO root: system_path_file_exists:models/base.gin` (once per include and parse pass);
- C++ libraries that write straight to file descriptor 2 (SentencePiece's `normalizer.cc` lines
  from TensorFlow Text's in-graph tokenizer, XLA/absl `W0000 ...` lines): fd 2 is routed through
  a thread that drops lines matching `NOISE` and forwards everything else, so real errors and
  tracebacks still show. Python's own `sys.stderr` (tqdm bars, warnings) bypasses that filter.

Values the user already set in the environment are never overridden.
"""
from __future__ import annotations

import atexit
import glob
import io
import logging
import os
import re
import sys
import threading
from typing import Optional

ENV_VERBOSE = "DSBS_VERBOSE"

# Lines that C++ libraries write to fd 2 and that say nothing a user can act on.
NOISE = re.compile(
    r"normalizer\.cc|cuInit|cuda_(?:diagnostics|driver|dnn|fft|blas)|Unable to register cu(?:DNN|FFT|BLAS)"
    r"|computation placer|TF-TRT Warning|oneDNN custom operations|cpu_feature_guard|"
    r"rebuild TensorFlow with the appropriate compiler flags|This TensorFlow binary is optimized"
    r"|All log messages before absl::InitializeLog|^[WI]\d{4} \d\d:\d\d:\d\d")


class _DropMessages(logging.Filter):
    """Drops records whose message matches; keeps everything else from the same logger."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._pattern.search(record.getMessage())


def verbose() -> bool:
    return os.environ.get(ENV_VERBOSE, "") not in ("", "0")


def _has_accelerator() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def set_environment() -> None:
    """Environment variables that C++ reads at import; call before TensorFlow/JAX load."""
    for key, value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GRPC_VERBOSITY", "ERROR"), ("GLOG_minloglevel", "2"),
                       ("TF_ENABLE_ONEDNN_OPTS", "0")):
        os.environ.setdefault(key, value)
    if not _has_accelerator():
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


def quiet_loggers() -> None:
    """absl and root-logger chatter off; our own `dsbs_jax` loggers keep warnings."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        absl_logging.set_stderrthreshold("error")
    except ImportError:  # absl comes with JAX/TF; a bare `dsbs rationales` install may lack it
        pass
    for name in ("absl", "tensorflow", "jax", "jax._src", "orbax", "seqio", "clu"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().addFilter(_DropMessages(r"^(Path not found|system_path_file_exists:)"))
    import warnings

    warnings.filterwarnings("ignore", message=r".*uncached FunctionDataset.*")


class _Fd2Filter:
    """Routes file descriptor 2 through a pipe; a daemon thread forwards lines not matching NOISE."""

    def __init__(self):
        self._original = os.dup(2)
        # Python-level writes (tqdm, tracebacks) go straight to the terminal, unfiltered and unbuffered.
        sys.stderr = io.TextIOWrapper(io.FileIO(os.dup(self._original), "w"), write_through=True,
                                      encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                                      errors="backslashreplace")
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._read_end = read_end
        self._thread = threading.Thread(target=self._pump, name="dsbs-stderr-filter", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _pump(self) -> None:
        pending = b""
        while True:
            chunk = os.read(self._read_end, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._forward(line + b"\n")
        if pending:
            self._forward(pending)

    def _forward(self, line: bytes) -> None:
        if not NOISE.search(line.decode(errors="replace")):
            os.write(self._original, line)

    def close(self) -> None:
        """Restores fd 2 and flushes what the thread still holds (also runs at exit)."""
        if self._read_end is None:
            return
        os.dup2(self._original, 2)  # drops our pipe's write end, so the thread reads EOF
        self._thread.join(timeout=2)
        os.close(self._read_end)
        self._read_end = None


_filter: Optional[_Fd2Filter] = None


def silence(filter_fd2: bool = True) -> None:
    """Everything above, unless `DSBS_VERBOSE` is set. Safe to call more than once."""
    global _filter
    if verbose():
        return
    set_environment()
    quiet_loggers()
    if filter_fd2 and _filter is None:
        try:
            _filter = _Fd2Filter()
        except OSError:  # no fd 2 (e.g. a daemon with closed descriptors): nothing to filter
            _filter = None
