"""pytest plugin of benchmarks/profile_tests.py: each test's wall, CPU and in-process JAX compile seconds.

CPU seconds are this process's plus those of the subprocesses that ended (and were waited for) during
the test: less sensitive than wall time to what else runs on a shared machine.

Loaded with `-p _profile_tests_plugin` next to `_profile_tests_hook` (whose counters it reads); writes one
JSON line per test to $DSBS_PROFILE_TESTS_LOG. (Subprocesses a test starts write their own lines.)
"""
import json
import os
import resource
import time

import pytest

import _profile_tests_hook as hook


def _cpu_s() -> float:
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before, started, cpu = dict(hook.stats), time.time(), _cpu_s()
    try:
        return (yield)
    finally:
        row = {"test": item.nodeid, "wall_s": time.time() - started, "cpu_s": _cpu_s() - cpu,
               **{k: hook.stats[k] - before[k] for k in ("compile_s", "backend_compile_s", "cache_hits", "cache_misses")}}
        with open(os.environ["DSBS_PROFILE_TESTS_LOG"], "a") as f:
            f.write(json.dumps(row) + "\n")
