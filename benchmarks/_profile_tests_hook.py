"""Per-process timing for benchmarks/profile_tests.py (loaded by a temporary .pth file; inert otherwise).

With $DSBS_PROFILE_TESTS_LOG set, this process appends one JSON line to that file at exit: its argv,
wall and CPU seconds, seconds inside outermost imports (main thread), and JAX's compile-time events.
"""
import os

_LOG = os.environ.get("DSBS_PROFILE_TESTS_LOG")

if _LOG:
    import atexit
    import builtins
    import importlib
    import json
    import sys
    import threading
    import time

    _START = time.time()
    _MAIN = threading.get_ident()
    stats = {"import_s": 0.0, "compile_s": 0.0, "backend_compile_s": 0.0, "cache_hits": 0, "cache_misses": 0,
              "saved_s": 0.0}
    _depth = [0]
    _jax_hooked = [False]
    _COMPILE_EVENTS = {"/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                       "/jax/core/compile/backend_compile_duration"}

    def _on_duration(event, duration_secs, **_):
        if event in _COMPILE_EVENTS:
            stats["compile_s"] += duration_secs
            if event.endswith("backend_compile_duration"):
                stats["backend_compile_s"] += duration_secs
        elif event == "/jax/compilation_cache/compile_time_saved_sec":
            stats["saved_s"] += duration_secs

    def _on_event(event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            stats["cache_hits"] += 1
        elif event == "/jax/compilation_cache/cache_misses":
            stats["cache_misses"] += 1

    def _hook_jax():
        monitoring = sys.modules.get("jax._src.monitoring")
        if monitoring is not None and hasattr(monitoring, "register_event_listener"):
            _jax_hooked[0] = True
            monitoring.register_event_duration_secs_listener(_on_duration)
            monitoring.register_event_listener(_on_event)

    def _timed(original):
        def wrapper(*args, **kwargs):
            if _depth[0] or threading.get_ident() != _MAIN:
                return original(*args, **kwargs)
            _depth[0] = 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _depth[0] = 0
                stats["import_s"] += time.perf_counter() - started
                if not _jax_hooked[0]:
                    _hook_jax()
        return wrapper

    builtins.__import__ = _timed(builtins.__import__)
    importlib.import_module = _timed(importlib.import_module)

    @atexit.register
    def _write():
        times = os.times()
        record = {"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv, "wall_s": time.time() - _START,
                  "cpu_s": times.user + times.system, **stats}
        with open(_LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
