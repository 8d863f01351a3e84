"""Where the test suite's time goes: XLA compilation, process start-up (imports) and the rest.

    python benchmarks/profile_tests.py -- -q tests                 # the whole suite (~as long as CI's pytest)
    python benchmarks/profile_tests.py -- -q tests/test_sweep.py   # one file
    python benchmarks/profile_tests.py --summary /tmp/split.jsonl  # re-read an earlier log

Every Python process of this venv -- pytest itself and each `dsbs`, `python -m t5x.train` or benchmark
subprocess a test starts, however it builds its environment -- writes one JSON line at exit (a `.pth`
file in site-packages loads `_profile_tests_hook` while the run lasts; it is removed afterwards):

* `wall_s`, `cpu_s`: the process's wall-clock life and user+sys CPU seconds (its own, not its children's);
* `import_s`: wall seconds spent inside outermost `import` statements (TF, SeqIO, JAX, ... at start-up and
  any lazy import later): the start-up cost a subprocess pays before it does real work;
* `compile_s`: JAX's own monitoring events -- tracing, lowering to MLIR and the XLA backend compile;
  `cache_hits` / `cache_misses` / `saved_s` from the persistent compilation cache when it is on.

The summary attributes subprocess time to the tests only in total: subprocesses run while the pytest
process waits, so pytest's wall time = its own work + the subprocesses' wall time (minus overlaps).
Nothing here is asserted anywhere; the numbers go to the issue notes and benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import tempfile

HOOK_DIR = pathlib.Path(__file__).resolve().parent
PTH_NAME = "zz_dsbs_profile_tests.pth"


def run(pytest_args: list[str], log: pathlib.Path) -> int:
    """pytest with the hook on in every Python process of this interpreter's site-packages."""
    pth = pathlib.Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    # One line, run by `site` at every interpreter start: a no-op unless the log variable is set.
    pth.write_text(f"import os, sys; os.environ.get('DSBS_PROFILE_TESTS_LOG') and (sys.path.append({str(HOOK_DIR)!r}), "
                   "__import__('_profile_tests_hook'))\n")
    try:
        env = {**os.environ, "DSBS_PROFILE_TESTS_LOG": str(log)}
        return subprocess.call([sys.executable, "-m", "pytest", "-p", "_profile_tests_plugin", *pytest_args], env=env)
    finally:
        pth.unlink()


def summarize(log: pathlib.Path, top: int = 25) -> str:
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [r for r in records if "argv" in r]
    tests = [r for r in records if "test" in r]
    root = max((r for r in rows if "pytest" in " ".join(r["argv"][:1])), key=lambda r: r["wall_s"])
    subs = [r for r in rows if r is not root]

    def total(items, key):
        return sum(r.get(key, 0.0) for r in items)

    def kind(r):
        argv = " ".join(r["argv"])
        for name in ("dsbs_jax/cli", "t5x/train", "t5x/eval", "t5x/infer", "benchmarks/", "llama_cpp"):
            if name in argv:
                return name.rstrip("/")
        return (r["argv"][0].rsplit("/", 1)[-1] if r["argv"] else "?") or "-c"

    lines = [f"processes: 1 pytest + {len(subs)} subprocesses (each Python process of this venv)",
             "| process | n | wall s | cpu s | imports s | JAX compile s (trace+lower+XLA) | XLA only s | cache hits/misses |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def row(name, items):
        hits, misses = int(total(items, "cache_hits")), int(total(items, "cache_misses"))
        lines.append(f"| {name} | {len(items)} | {total(items, 'wall_s'):.0f} | {total(items, 'cpu_s'):.0f} | "
                     f"{total(items, 'import_s'):.0f} | {total(items, 'compile_s'):.0f} | "
                     f"{total(items, 'backend_compile_s'):.0f} | {hits}/{misses} |")

    row("pytest (the test process)", [root])
    groups: dict[str, list] = {}
    for r in subs:
        groups.setdefault(kind(r), []).append(r)
    for name, items in sorted(groups.items(), key=lambda kv: -total(kv[1], "wall_s")):
        row(f"subprocess: {name}", items)
    row("all subprocesses", subs)
    row("everything", rows)
    sub_wall = total(subs, "wall_s")
    compile_all = total(rows, "compile_s")
    startup = total(subs, "import_s")
    rest = root["wall_s"] - compile_all - startup - root.get("import_s", 0.0)
    lines += ["",
              f"pytest wall {root['wall_s']:.0f} s, of which (summing over processes; subprocess time overlaps the wait):",
              f"  JAX compilation (all processes): {compile_all:.0f} s",
              f"  subprocess start-up (imports in subprocesses): {startup:.0f} s",
              f"  imports in the pytest process: {root.get('import_s', 0.0):.0f} s",
              f"  everything else (real work, I/O, waiting): {rest:.0f} s",
              f"  (subprocess wall in total: {sub_wall:.0f} s)"]
    if tests:
        lines += ["", f"tests by CPU seconds (top {top}): wall s / CPU s",
                  *(f"  {t['test']}: {t['wall_s']:.1f} / {t.get('cpu_s', 0):.1f}"
                    for t in sorted(tests, key=lambda t: -t.get("cpu_s", 0))[:top])]
        lines += ["", f"tests with the most JAX compilation in the pytest process (top {top}):",
                  "| test | wall s | CPU s (with subprocesses) | compile s | XLA only s | cache hits/misses |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for t in sorted(tests, key=lambda t: -t["compile_s"])[:top]:
            lines.append(f"| {t['test']} | {t['wall_s']:.1f} | {t.get('cpu_s', 0):.1f} | {t['compile_s']:.1f} | "
                         f"{t['backend_compile_s']:.1f} | "
                         f"{t['cache_hits']}/{t['cache_misses']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=pathlib.Path, help="JSON-lines log (default: a new temp file)")
    parser.add_argument("--summary", type=pathlib.Path, help="only summarize this earlier log")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args(argv)
    if args.summary:
        print(summarize(args.summary))
        return 0
    log = args.log or pathlib.Path(tempfile.mkstemp(prefix="profile_tests.", suffix=".jsonl")[1])
    log.write_text("")
    rc = run(args.pytest_args, log)
    print(f"\nlog: {log}\n" + summarize(log))
    return rc


if __name__ == "__main__":
    sys.exit(main())
