"""Every gin file under gin/ parses: statically always, fully with gin when its modules import.

Without T5X installed, T5X's gin files are known from `T5X_GIN_FILES` below (names, includes and
the macros each sets or leaves `%gin.REQUIRED`, read from T5X's source at git commit
cc342d419ec3e3e9c4bf1df33c82330cafdc1e16), so includes, macro definitions and the final state of
the REQUIRED macros of every entry file are checked against the real T5X files' behaviour.
Configurables of our own modules (`tasks.*`, `dsbs_jax.*`) are resolved and their parameters
checked. With T5X importable, the T5X experiment files are parsed by gin itself, with their task
names looked up in the SeqIO registry over a tiny data root.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any, Optional

import pytest
from gin import config_parser

from dsbs_jax import methods

REPO = pathlib.Path(__file__).resolve().parents[1]
GIN_DIR = REPO / "gin"
T5X_DIR = GIN_DIR / "t5x"
OUR_MODULES = ("tasks", "dsbs_jax")
# Defined only where T5X imports (dsbs_jax/t5x_model.py); checked by the full parse when it does.
T5X_ONLY = ("dsbs_jax.t5x_model.PairedEncoderDecoderModel",)
HAVE_T5X = importlib.util.find_spec("t5x") is not None

# name -> (includes, macros set to a value, macros left %gin.REQUIRED, macros used and not set).
T5X_GIN_FILES = {
    "t5x/configs/runs/eval.gin": (
        (), ("TASK_FEATURE_LENGTHS", "MIXTURE_OR_TASK_MODULE"),
        ("MIXTURE_OR_TASK_NAME", "CHECKPOINT_PATH", "EVAL_OUTPUT_DIR"), ("MODEL",)),
    "t5x/configs/runs/finetune.gin": (
        (), ("DROPOUT_RATE", "USE_CACHED_TASKS", "BATCH_SIZE", "EVAL_STEPS", "EVAL_PERIOD",
             "EVALUATOR_USE_MEMORY_CACHE", "EVALUATOR_NUM_EXAMPLES", "JSON_WRITE_N_RESULTS",
             "USE_HARDWARE_RNG", "RANDOM_SEED", "TRAIN_STEPS_RELATIVE", "MIXTURE_OR_TASK_MODULE"),
        ("MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "INITIAL_CHECKPOINT_PATH"),
        ("MODEL",)),
    "t5x/configs/runs/infer.gin": (
        (), ("MIXTURE_OR_TASK_MODULE",),
        ("MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "CHECKPOINT_PATH", "INFER_OUTPUT_DIR"), ("MODEL",)),
    "t5x/configs/runs/pretrain.gin": (
        (), ("BATCH_SIZE", "USE_CACHED_TASKS", "MIXTURE_OR_TASK_MODULE", "SHUFFLE_TRAIN_EXAMPLES",
             "USE_HARDWARE_RNG", "RANDOM_SEED", "TRAIN_STEPS_RELATIVE"),
        ("MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "MODEL_DIR"), ("MODEL",)),
    "t5x/examples/t5/t5_1_1/base.gin": (
        (), ("Z_LOSS", "LABEL_SMOOTHING", "LOSS_NORMALIZING_FACTOR", "VOCABULARY", "OPTIMIZER", "MODEL"),
        ("DROPOUT_RATE",), ()),
    **{f"t5x/examples/t5/t5_1_1/{size}.gin": (("t5x/examples/t5/t5_1_1/base.gin",), (), (), ())
       for size in ("small", "large", "xl", "xxl", "tiny")},
}
# Macros that the command line supplies (`--gin.MODEL_DIR=...`), per T5X entry point.
FLAG_MACROS = {"t5x.train": {"MODEL_DIR"}, "t5x.eval": {"CHECKPOINT_PATH", "EVAL_OUTPUT_DIR"}}
REQUIRED = object()
T5X_VALUE = object()
PRETRAINED_STEPS = 1_000_000


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name, evaluate):
        return ("@", scoped_name)

    def macro(self, name):
        return ("%", name)


@dataclasses.dataclass
class GinState:
    """The net effect of parsing a list of gin files in order, as far as macros go."""

    files: list = dataclasses.field(default_factory=list)
    macros: dict = dataclasses.field(default_factory=dict)  # name -> value | REQUIRED | T5X_VALUE
    used: list = dataclasses.field(default_factory=list)  # (macro, "file:line")
    bindings: list = dataclasses.field(default_factory=list)  # (selector, arg, file, line, imports)
    dynamic: bool = False
    imports: dict = dataclasses.field(default_factory=dict)  # bound name -> module path


def _walk_values(value: Any, kind: str):
    if isinstance(value, tuple) and len(value) == 2 and value[0] == kind and isinstance(value[1], str):
        yield value[1]
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk_values(item, kind)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_values(key, kind)
            yield from _walk_values(item, kind)


def resolve_include(name: str, including: pathlib.Path) -> Optional[pathlib.Path]:
    """Our include paths: repo-root relative (gin/t5x), gin/-relative, or the including file's dir."""
    for base in (REPO, GIN_DIR, including.parent):
        if (base / name).is_file():
            return base / name
    return None


def parse_into(state: GinState, path: pathlib.Path, stack=()) -> None:
    """Parses `path` (and its includes, in order) into `state`; raises AssertionError on errors."""
    assert path not in stack, f"include cycle: {' -> '.join(map(str, stack + (path,)))}"
    state.files.append(path)
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    for st in config_parser.ConfigParser(path.read_text(), _Delegate()):
        where = f"{rel}:{st.location.line_num}"
        if isinstance(st, config_parser.ImportStatement):
            if st.module == "__gin__.dynamic_registration":
                state.dynamic = True
            else:
                state.imports[st.bound_name()] = st.partial_path()
        elif isinstance(st, config_parser.IncludeStatement):
            if st.filename.startswith("t5x/"):
                assert st.filename in T5X_GIN_FILES, (
                    f"{where}: include {st.filename!r} is not one of T5X's gin files known here "
                    f"({sorted(T5X_GIN_FILES)})")
                _apply_t5x(state, st.filename)
            else:
                target = resolve_include(st.filename, path)
                assert target is not None, (
                    f"{where}: include {st.filename!r} found neither under {REPO}, {GIN_DIR} nor {path.parent}")
                parse_into(state, target, stack + (path,))
        elif isinstance(st, config_parser.BindingStatement):
            for name in _walk_values(st.value, "%"):
                if name != "gin.REQUIRED":
                    state.used.append((name, where))
            if not st.scope and not st.arg_name and "." not in st.selector:
                state.macros[st.selector] = REQUIRED if st.value == ("%", "gin.REQUIRED") else st.value
            else:
                state.bindings.append((st.selector, st.arg_name, where, dict(state.imports)))
            for ref in _walk_values(st.value, "@"):
                state.bindings.append((ref.split("/")[-1], "", where, dict(state.imports)))


def _apply_t5x(state: GinState, name: str) -> None:
    includes, defined, required, uses = T5X_GIN_FILES[name]
    for inc in includes:
        _apply_t5x(state, inc)
    state.macros.update({m: T5X_VALUE for m in defined})
    state.macros.update({m: REQUIRED for m in required})
    state.used.extend((m, name) for m in uses)


def gin_state(*paths: pathlib.Path) -> GinState:
    state = GinState()
    for path in paths:
        parse_into(state, path)
    return state


def all_gin_files():
    return sorted(GIN_DIR.rglob("*.gin"))


def _ids(paths):
    return [str(p.relative_to(GIN_DIR)) for p in paths]


def companions(path: pathlib.Path) -> list:
    """Files a non-entry gin file is combined with: the entries including it (T5X), models + runs."""
    if "experiments" in path.parts or path.name.endswith("_tiny.gin"):
        return []
    if path.is_relative_to(T5X_DIR):
        return sorted((T5X_DIR / "experiments").glob("*.gin"))
    return [p for p in all_gin_files() if not p.is_relative_to(T5X_DIR) and "experiments" not in p.parts]


# --------------------------------------------------------------------------------------------
# Static checks: every file under gin/ (ours and the embedded trainer's)
# --------------------------------------------------------------------------------------------

def test_gin_tree_is_not_empty():
    t5x_experiments = sorted((T5X_DIR / "experiments").glob("*.gin"))
    assert len(t5x_experiments) >= 10, f"expected the T5X experiment files under {T5X_DIR / 'experiments'}"
    for size in ("small", "base", "large", "xl", "xxl"):
        assert (T5X_DIR / "sizes" / f"{size}.gin").is_file(), f"missing gin/t5x/sizes/{size}.gin"


@pytest.mark.parametrize("path", all_gin_files(), ids=_ids(all_gin_files()))
def test_includes_resolve_and_macros_are_defined(path):
    state = gin_state(path)
    defined = set(state.macros)
    for other in companions(path):
        defined |= set(gin_state(other).macros)
    missing = [(m, where) for m, where in state.used if m not in defined]
    assert not missing, f"{path.relative_to(REPO)}: macros used but never defined: {missing}"


def _resolve_ours(selector: str, imports: dict, dynamic: bool):
    """The Python object an our-module selector names, or None when it is not ours."""
    head, _, rest = selector.partition(".")
    module_path = imports.get(head, head) if dynamic else None
    if dynamic:
        full = f"{module_path}.{rest}" if rest else module_path
    else:
        import gin

        try:
            configurable = gin.config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
        except Exception:  # noqa: BLE001 -- ambiguous or unknown: checked below by name
            configurable = None
        if configurable is None:
            return None if not selector.startswith(OUR_MODULES) else ("missing", selector)
        return configurable.wrapped
    if not full.startswith(OUR_MODULES) or (full.startswith(T5X_ONLY) and not HAVE_T5X):
        return None
    parts = full.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return ("missing", full)
            obj = getattr(obj, attr)
        return obj
    return ("missing", full)


def our_configurable_errors(path: pathlib.Path) -> list:
    """Bindings of `path` (with includes) that name a missing object or parameter of our modules."""
    state = gin_state(path)
    if not state.dynamic:  # classic gin: configurables register when their module is imported
        for module in state.imports.values():
            if module.startswith(OUR_MODULES):
                importlib.import_module(module)
    errors = []
    for selector, arg, where, imports in state.bindings:
        obj = _resolve_ours(selector, imports, state.dynamic)
        if obj is None:
            continue
        if isinstance(obj, tuple) and obj[0] == "missing":
            errors.append(f"{where}: {selector!r} names {obj[1]!r}, which does not exist in our modules")
        elif not callable(obj):
            errors.append(f"{where}: {selector!r} is not callable, so gin cannot configure it")
        elif arg:
            params = inspect.signature(obj).parameters
            if arg not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
                errors.append(f"{where}: {selector}.{arg}: no such parameter; it takes {sorted(params)}")
    return errors


@pytest.mark.parametrize("path", all_gin_files(), ids=_ids(all_gin_files()))
def test_our_configurables_exist(path, tiny_data_root, monkeypatch):
    monkeypatch.setenv("DSBS_DATA_ROOT", str(tiny_data_root))
    assert our_configurable_errors(path) == []


def test_configurable_check_catches_mistakes(tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text("from __gin__ import dynamic_registration\nfrom dsbs_jax.models import config\n"
                   "from dsbs_jax.train import trainer\n"
                   "trainer.TrainConfig.no_such_arg = 1\nconfig.NoSuchFactory.size = 'base'\n"
                   "config.t5_1_1_config.size = 'base'\ntrainer.TrainConfig.batch_size = 8\n")
    errors = our_configurable_errors(bad)
    assert len(errors) == 2, errors
    assert "no_such_arg: no such parameter" in errors[0] and "dsbs_jax.models.config.NoSuchFactory" in errors[1]


# --------------------------------------------------------------------------------------------
# Static checks of the T5X experiment files: what T5X will see after all includes
# --------------------------------------------------------------------------------------------

T5X_ENTRIES = sorted((T5X_DIR / "experiments").glob("*.gin")) + sorted((T5X_DIR / "tiny").glob("*_tiny.gin"))


def _entry_point(path: pathlib.Path) -> str:
    return "t5x.eval" if "_eval_" in path.name else "t5x.train"


@pytest.mark.parametrize("path", T5X_ENTRIES, ids=_ids(T5X_ENTRIES))
def test_t5x_entry_sets_every_required_macro(path):
    state = gin_state(path)
    header = " ".join(path.read_text().splitlines()[:8])
    entry = _entry_point(path)
    assert f"python -m {entry}" in header and f"--gin_file=gin/t5x/{path.relative_to(T5X_DIR)}" in header, (
        f"{path.relative_to(REPO)}: must begin with the command that runs it (python -m {entry} --gin_file=...)")
    assert any("Expected runtime:" in line for line in path.read_text().splitlines()[:12]), (
        f"{path.relative_to(REPO)}: state the expected runtime at the top")
    left = {m for m, v in state.macros.items() if v is REQUIRED}
    if path.parent.name == "tiny":
        left.discard("VOCAB_PATH")  # the local SentencePiece model, given on the command line
    assert left == FLAG_MACROS[entry], (
        f"{path.relative_to(REPO)}: after all includes, REQUIRED macros are {sorted(left)}; only "
        f"{sorted(FLAG_MACROS[entry])} may be left for the command line (check include order)")
    assert "MODEL" in state.macros, f"{path.relative_to(REPO)}: no model gin included (MODEL undefined)"
    assert any(f.name == "eval.gin" or f.name == "finetune.gin" for f in state.files)
    task = state.macros["MIXTURE_OR_TASK_NAME"]
    assert isinstance(task, str) and re.fullmatch(r"[a-z0-9]+_[a-z0-9_.]+", task), task
    ref = methods.parse_task_name(task)
    assert ref is not None, f"{path.name}: {task} is not a task of the family"
    if entry == "t5x.eval":
        scoring = {m.eval_task(ref.dataset) for m in methods.METHODS.values()}
        assert task in scoring, f"{path.name}: evaluation must decode a method's gold-label task, found {task}"
        return
    assert state.macros["USE_CACHED_TASKS"] is False
    eval_task = state.macros["EVAL_MIXTURE_OR_TASK_NAME"]
    method = methods.method_for_task(task)
    assert eval_task == method.eval_task(ref.dataset), f"{path.name}: trains {task} but evaluates {eval_task}"
    lengths = state.macros["TASK_FEATURE_LENGTHS"]
    assert set(lengths) == {"inputs", "targets"} and all(v % 8 == 0 for v in lengths.values()), lengths


T5X_TRAIN = [p for p in (T5X_DIR / "experiments").glob("*.gin") if "_eval_" not in p.name]


@pytest.mark.parametrize("path", sorted(T5X_TRAIN), ids=_ids(sorted(T5X_TRAIN)))
def test_t5x_size_settings_match(path):
    """Model gin, checkpoint, steps and partitions agree with the size in the file name."""
    size = path.stem.rsplit("_", 1)[1]
    state = gin_state(path)
    t5x_models = [m for f in state.files for m in re.findall(r"t5x/examples/t5/t5_1_1/(\w+)\.gin", f.read_text())]
    assert t5x_models == [size], f"{path.name}: includes T5X model gins {t5x_models}, expected [{size!r}]"
    assert state.macros["INITIAL_CHECKPOINT_PATH"] == (
        f"gs://t5-data/pretrained_models/t5x/t5_1_1_{size}/checkpoint_1000000")
    assert state.macros["TRAIN_STEPS"] == PRETRAINED_STEPS + state.macros["FINETUNE_STEPS"], (
        f"{path.name}: TRAIN_STEPS must be 1_000_000 pretrained steps + FINETUNE_STEPS")
    assert state.macros["PRETRAINED_STEPS"] == PRETRAINED_STEPS
    partitions = [a for s, a, *_ in state.bindings if s == "partitioning.PjitPartitioner" and a == "num_partitions"]
    assert partitions, f"{path.name}: sets no PjitPartitioner.num_partitions"
    # Reference: batch 64 x 10,000 steps, XXL batch 32 x 4,000 steps.
    expected = (32, 4_000) if size == "xxl" else (64, 10_000)
    assert (state.macros["BATCH_SIZE"], state.macros["FINETUNE_STEPS"]) == expected


def _num_partitions(path: pathlib.Path) -> int:
    value = None
    for f in gin_state(path).files:
        for st in config_parser.ConfigParser(f.read_text(), _Delegate()):
            if isinstance(st, config_parser.BindingStatement) and st.arg_name == "num_partitions":
                value = st.value
    return value


def test_partitions_grow_with_size():
    parts = {s: _num_partitions(T5X_DIR / "experiments" / f"cqa_dsbs_{s}.gin")
             for s in ("small", "base", "large", "xl", "xxl")}
    assert parts["small"] == parts["base"] == 1, parts
    assert all(2 <= parts[s] <= 8 for s in ("large", "xl", "xxl")), parts
    assert parts["large"] <= parts["xl"] <= parts["xxl"], parts
    for size in ("large", "xl", "xxl"):  # eval restores the same sharding
        assert _num_partitions(T5X_DIR / "experiments" / f"cqa_eval_{size}.gin") == parts[size]


def test_static_check_catches_include_order_mistakes(tmp_path):
    """The REQUIRED-macro check sees what T5X would: a run config included last resets them."""
    bad = tmp_path / "bad_order.gin"
    bad.write_text("include 'gin/t5x/datasets/cqa.gin'\nMIXTURE_OR_TASK_NAME = 'cqa_dsbs_gold'\n"
                   "include 'gin/t5x/sizes/base.gin'\n")
    state = gin_state(bad)
    left = {m for m, v in state.macros.items() if v is REQUIRED}
    assert {"MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "EVAL_MIXTURE_OR_TASK_NAME"} <= left, left


# --------------------------------------------------------------------------------------------
# Task names exist in the SeqIO registry (our `tasks` package over a tiny data root)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> pathlib.Path:
    """A data root with a few real records per dataset that the experiments name."""
    from dsbs_jax.data import schema, tfrecords

    root = tmp_path_factory.mktemp("dsbs_data")
    for dataset, label in (("cqa", "bank"), ("esnli", "neutral"), ("anli1", "entailment"), ("svamp", "( 8.0 / 2.0 )"),
                           ("svamp_asdiv", "( 8.0 / 2.0 )")):
        for split in schema.SPLITS:
            examples = [
                schema.Example(id=f"{split}-{i}", dataset=dataset, split=split, input=f"question {i} about {dataset}",
                               label=label, teacher_label=label, rationales=(f"because {i} is a reason.",))
                for i in range(8)
            ]
            tfrecords.write_split(str(root / dataset), split, examples, num_shards=1, manifest_extra={})
    return root


_LOOKUP = """
import json, sys
import seqio
import tasks  # registers every dataset under $DSBS_DATA_ROOT
missing = []
for name in json.loads(sys.argv[1]):
    try:
        seqio.get_mixture_or_task(name)
    except ValueError:
        missing.append(name)
print(json.dumps(missing))
"""


def test_experiment_task_names_are_registered(tiny_data_root):
    """`import tasks` over a data root registers every task/mixture that a T5X gin file names."""
    if not (REPO / "tasks" / "__init__.py").is_file():
        pytest.skip("the tasks package is not in this checkout yet")
    names = set()
    for path in T5X_ENTRIES:
        state = gin_state(path)
        names.add(state.macros["MIXTURE_OR_TASK_NAME"])
        if isinstance(state.macros.get("EVAL_MIXTURE_OR_TASK_NAME"), str):
            names.add(state.macros["EVAL_MIXTURE_OR_TASK_NAME"])
    # A fresh interpreter: `import tasks` registers at import, from the environment of that moment.
    env = dict(os.environ, DSBS_DATA_ROOT=str(tiny_data_root), PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", _LOOKUP, json.dumps(sorted(names))], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    missing = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(names) >= 20 and not missing, f"task/mixture names not registered by `import tasks`: {missing}"


# --------------------------------------------------------------------------------------------
# Full parse by gin: the embedded trainer's files always, T5X's when T5X is importable
# --------------------------------------------------------------------------------------------

_PARSE_ALL = """
import importlib.util, json, sys, traceback  # gin 0.5 uses importlib.util without importing it
import gin
jobs = json.loads(sys.argv[1])
for path in jobs["search_paths"]:
    gin.add_config_file_search_path(path)
for name, files in jobs["files"].items():
    gin.clear_config(clear_constants=True)
    try:
        gin.parse_config_files_and_bindings(files, [], finalize_config=False)
        print(json.dumps([name, "PARSED"]))
    except Exception:
        print(json.dumps([name, traceback.format_exc()[-3000:]]))
"""


def parse_with_gin(files_by_name: dict, search_paths, env) -> dict:
    """Parses each file list with gin in one fresh interpreter (gin's registry never leaks here)."""
    jobs = json.dumps({"files": {k: [str(f) for f in v] for k, v in files_by_name.items()},
                       "search_paths": [str(p) for p in search_paths]})
    result = subprocess.run([sys.executable, "-c", _PARSE_ALL, jobs], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(line) for line in result.stdout.splitlines() if line.startswith("["))


EMBEDDED = [p for p in all_gin_files() if not p.is_relative_to(T5X_DIR)]


@pytest.fixture(scope="session")
def embedded_parses(tiny_data_root) -> dict:
    jobs = {}
    for path in EMBEDDED:
        # A run config needs a model config before it.
        jobs[str(path)] = [GIN_DIR / "models" / "base.gin", path] if "runs" in path.parts else [path]
    env = dict(os.environ, DSBS_DATA_ROOT=str(tiny_data_root), PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return parse_with_gin(jobs, [REPO, GIN_DIR], env)


@pytest.mark.parametrize("path", EMBEDDED, ids=_ids(EMBEDDED))
def test_embedded_trainer_gin_parses_with_gin(path, embedded_parses):
    assert embedded_parses.get(str(path)) == "PARSED", embedded_parses.get(str(path), "not parsed")


def test_t5x_experiments_parse_with_real_t5x(tiny_data_root):
    """With T5X installed, gin itself parses every T5X entry file as t5x.train / t5x.eval would."""
    pytest.importorskip("t5x")
    t5x_root = pathlib.Path(importlib.import_module("t5x").__file__).parent.parent
    env = dict(os.environ, DSBS_DATA_ROOT=str(tiny_data_root), PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    for entry in ("t5x.train", "t5x.eval"):
        jobs = {str(p): [p] for p in T5X_ENTRIES if _entry_point(p) == entry}
        # The run configs `import __main__ as train_script`: make the entry module __main__.
        code = f"import sys, {entry} as m; sys.modules['__main__'] = m\n" + _PARSE_ALL
        result = subprocess.run([sys.executable, "-c", code, json.dumps(
            {"files": {k: [str(f) for f in v] for k, v in jobs.items()}, "search_paths": [str(REPO), str(t5x_root)]})],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        parsed = dict(json.loads(line) for line in result.stdout.splitlines() if line.startswith("["))
        failed = {k: v for k, v in parsed.items() if v != "PARSED"}
        assert not failed and set(parsed) == set(jobs), failed or sorted(set(jobs) - set(parsed))


def t5x_command_errors(entry: str, gin_files: list, flag_macros: set) -> list:
    """What T5X would reject in `python -m {entry} --gin_file=F... --gin.M=...` (static check).

    Every gin file must resolve from the repo root (T5X's default search path `.`), and after all
    includes every REQUIRED macro must be set by a file or by one of `flag_macros`; our
    configurables must exist. Used by tests/test_launch.py on the commands the scripts generate.
    """
    paths = [REPO / f for f in gin_files]
    errors = [f"python -m {entry}: --gin_file={f} does not exist" for f, p in zip(gin_files, paths) if not p.is_file()]
    if errors:
        return errors
    state = gin_state(*paths)
    left = {m for m, v in state.macros.items() if v is REQUIRED} - set(flag_macros)
    if left:
        errors.append(f"python -m {entry} {' '.join(gin_files)}: REQUIRED macros left unset: {sorted(left)}")
    if "MODEL" not in state.macros:
        errors.append(f"python -m {entry} {' '.join(gin_files)}: no model gin included (MODEL undefined)")
    for path in paths:
        errors += our_configurable_errors(path)
    return errors
