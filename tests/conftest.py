"""Shared fixtures, and the environment every test and every subprocess it starts runs in.

Set before JAX is first imported, and inherited by each `dsbs ...`, `python -m t5x.train` or
benchmark subprocess (they copy `os.environ`):

* eight fake CPU devices (`--xla_force_host_platform_device_count=8`), and XLA's CPU backend without
  LLVM's optimization passes (`--xla_backend_optimization_level=0`: faster to compile);
* one JAX persistent compilation cache for the whole test session, so that a tiny model compiled
  by one test (or one subprocess) is loaded, not compiled again, by the next. The directory is
  new for each session and removed at its end: a run starts cold and can never read entries of
  another run or another JAX version. Every executable is cached however fast it compiled or
  small it is (minimum compile time 0 s, no size floor): the tiny models compile in well under
  JAX's default 1 s threshold. tests/test_compilation_cache.py checks that training with the
  cache gives bit-identical results to training without it.

Artifacts built once per test run and shared by the test modules (and by pytest-xdist's workers,
through `built_once`): the letters data root and its SentencePiece model (`letters_root`), a
finished tiny `dsbs train` run of it (`letters_run`) and an imported subset of the release
(`imported_release`); and, once per process, a SentencePiece model on real release text (`spm_model`).
"""
import fcntl
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import Callable

# LLVM's optimizations cost more compile time than they save run time on the tests' tiny models: without
# them `.ci/run` used 8.5 % less CPU (2,471 -> 2,261 s; benchmarks/RESULTS.md). Every comparison in the
# tests is between runs under the same flags or within a tolerance. XLA_FLAGS's own level wins.
for _flag, _kept in (("--xla_force_host_platform_device_count=8", "--xla_force_host_platform_device_count=8"),
                     ("--xla_backend_optimization_level=0", "--xla_backend_optimization_level")):
    if _kept not in os.environ.get("XLA_FLAGS", ""):  # pytest-xdist workers inherit the controller's
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# pytest-xdist workers inherit the cache directory of their controller, which made it and removes it.
XDIST_WORKER = "PYTEST_XDIST_WORKER" in os.environ
COMPILATION_CACHE_DIR = (os.environ["JAX_COMPILATION_CACHE_DIR"] if XDIST_WORKER
                         else tempfile.mkdtemp(prefix="dsbs-jax-compilation-cache-"))
os.environ.update({
    "JAX_ENABLE_COMPILATION_CACHE": "true",
    "JAX_COMPILATION_CACHE_DIR": COMPILATION_CACHE_DIR,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
})

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# The modules that take minutes, slowest first (measured with --durations on 2 cores). pytest-xdist
# (`-n 2 --dist loadfile`, README's test command) hands out whole modules in collection order; starting
# with these keeps one worker from being left with a long module while the other has finished.
SLOW_MODULES_FIRST = ("test_t5x_multihost", "test_t5x_rehearsal", "test_t5x_metrics", "test_sweep",
                      "test_train_faults", "test_train_preemption", "test_readme", "test_demo", "test_benchmarks",
                      "test_beam_rationales", "test_train_e2e", "test_multihost", "test_train_sharding")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist would otherwise order modules by their number of tests


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))  # stable


def pytest_terminal_summary(terminalreporter):
    if XDIST_WORKER:
        return
    entries = [p for p in pathlib.Path(COMPILATION_CACHE_DIR).glob("*-cache")]
    size = sum(p.stat().st_size for p in entries)
    terminalreporter.write_line(f"JAX compilation cache of this session: {len(entries)} executables, "
                                f"{size / 2**20:.0f} MiB ({COMPILATION_CACHE_DIR}, removed now)")


def pytest_unconfigure(config):
    if not XDIST_WORKER:
        shutil.rmtree(COMPILATION_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def release_dir() -> pathlib.Path:
    """The real PaLM-rationale release at ../shared/data/dsbs_release (or $DSBS_RELEASE_DIR)."""
    path = pathlib.Path(os.environ.get("DSBS_RELEASE_DIR", REPO_ROOT.parent / "shared" / "data" / "dsbs_release"))
    if not path.is_dir():
        pytest.skip(f"release data not found at {path}; set DSBS_RELEASE_DIR to its location")
    return path


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> str:
    """A small SentencePiece model trained on real release text (T5 ids: pad 0, eos 1, unk 2)."""
    from dsbs_jax.data.vocab import train_sentencepiece

    release = pathlib.Path(os.environ.get("DSBS_RELEASE_DIR", REPO_ROOT.parent / "shared" / "data" / "dsbs_release"))
    texts = []
    if (release / "cqa" / "cqa_test.json").exists():
        texts = (release / "cqa" / "cqa_test.json").read_text().splitlines()[:800]
    texts += [f"{a} plus {b} is {a + b}. So the answer is (a) yes." for a in range(40) for b in range(10)]
    out = tmp_path_factory.mktemp("spm") / "spm"
    return train_sentencepiece(texts, str(out), vocab_size=512)


def built_once(tmp_path_factory, name: str, build: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """`{tmp}/name`, filled by `build(path)` once per test run: under pytest-xdist the first worker to
    ask builds it while the others wait on a file lock, then all of them read the same files."""
    shared = tmp_path_factory.getbasetemp()
    if XDIST_WORKER:
        shared = shared.parent  # xdist gives each worker its own basetemp under the run's one
    path, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # the remains of a build that failed in another worker
            path.mkdir()
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def imported_release(release_dir, tmp_path_factory) -> pathlib.Path:
    """An import root of the real release: CQA (all splits), e-SNLI and ANLI-r1 (200 examples per split).

    Read-only for the tests that share it; a test that writes into an import root makes its own.
    """
    from dsbs_jax.data import import_cli

    def build(root: pathlib.Path) -> None:
        out = str(root / "data")
        assert import_cli.main(["--format", "release", "--dataset", "cqa", "--src", str(release_dir), "--out", out]) == 0
        for dataset in ("esnli", "anli1"):
            assert import_cli.main(["--format", "release", "--dataset", dataset, "--src", str(release_dir),
                                    "--out", out, "--limit", "200"]) == 0

    return built_once(tmp_path_factory, "imported_release", build) / "data"


@pytest.fixture(scope="session")
def letters_root(tmp_path_factory):
    """The synthetic letters dataset (tests/synthetic_letters.py) under a data root, and its vocabulary.

    Returns (data_root, spm_path): `{data_root}/letters` holds the TFRecords; `import tasks` with
    DSBS_DATA_ROOT=data_root and DSBS_SPM_PATH=spm_path registers the `letters_*` family. Read-only.
    """
    import synthetic_letters
    from dsbs_jax.data.vocab import train_sentencepiece

    def build(root: pathlib.Path) -> None:
        train_sentencepiece(synthetic_letters.vocab_texts(), str(root / "spm"), vocab_size=64)
        synthetic_letters.write_dataset(root / "data")

    root = built_once(tmp_path_factory, "letters", build)
    return root / "data", str(root / "spm.model")


@pytest.fixture(scope="session")
def letters_run(letters_root, tmp_path_factory) -> pathlib.Path:
    """A finished `dsbs train` run (a real subprocess) of `synthetic_letters.train_flags`; read-only (copy it to change it)."""
    import synthetic_letters

    def build(root: pathlib.Path) -> None:
        result = subprocess.run([sys.executable, "-m", "dsbs_jax.cli", "train", *synthetic_letters.train_flags(root / "run")],
                                env=synthetic_letters.dsbs_env(*letters_root), capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    return built_once(tmp_path_factory, "letters_run", build) / "run"
