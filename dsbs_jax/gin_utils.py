"""Gin plumbing shared by the `dsbs train/eval` entry points (T5X-style flags, clear errors).

* Every entry point adds the repository's `gin/` directory (and `--gin_search_path`s) to gin's
  search path, so `--gin_file=runs/finetune.gin` and `include 'models/base.gin'` resolve after
  `pip install -e .` from any working directory.
* Flags follow T5X: `--gin_file` (repeatable), `--gin_bindings`, and `--gin.KEY=VALUE` shorthands.
  Unquoted non-literal values (`--gin.OPTIMIZER=adamw`, `--gin.MODEL_DIR=/tmp/x`) are taken as
  strings.
* `MIXTURE_OR_TASK_MODULE` is imported *before* the strict parse (a first lenient pass reads the
  macro), so task modules can register SeqIO tasks and gin configurables that the files use.
* Errors name the file and line (or the flag) of the offending binding: unknown configurables
  (gin's own message carries the location), macros that are set but used by nothing (typos such as
  `TRAIN_STEPZ`), and values of the wrong type (reported by the dataclass the macro feeds).
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import pathlib
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import gin

_INSTALLED_GIN_DIR = pathlib.Path(__file__).resolve().parent / "gin"  # a wheel's copy (setup.py build_py)
_CHECKOUT = pathlib.Path(__file__).resolve().parents[1]
# The checkout's gin/ (editable installs, tests), else the wheel's: next to site-packages there is
# only gin-config's own `gin` package, which must not be searched.
GIN_DIR = _CHECKOUT / "gin" if (_CHECKOUT / "setup.py").is_file() else _INSTALLED_GIN_DIR


class GinConfigError(ValueError):
    """A gin file or binding is wrong; the message names where and how to fix it."""


@dataclasses.dataclass(frozen=True)
class GinArgs:
    files: Tuple[str, ...]
    bindings: Tuple[str, ...]
    search_paths: Tuple[str, ...]
    rest: Tuple[str, ...]


def _as_binding(key: str, value: str) -> str:
    try:
        gin.config.parse_value(value)
    except Exception:  # noqa: BLE001 - any unparsable literal becomes a string
        value = repr(value)
    return f"{key} = {value}"


def parse_flags(argv: Sequence[str]) -> GinArgs:
    """Splits T5X-style gin flags from the rest of `argv`."""
    files: List[str] = []
    bindings: List[str] = []
    paths: List[str] = []
    rest: List[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        takes_value = name in ("--gin_file", "--gin_bindings", "--gin_search_path", "--gin_search_paths")
        if takes_value and not eq:
            if i + 1 >= len(args):
                raise GinConfigError(f"Flag {name} needs a value.")
            value, i = args[i + 1], i + 1
        if name == "--gin_file":
            files.append(value)
        elif name == "--gin_bindings":
            bindings.append(value)
        elif name in ("--gin_search_path", "--gin_search_paths"):
            paths.extend(p for p in value.split(",") if p)
        elif name.startswith("--gin."):
            if not eq:
                raise GinConfigError(f"Flag {arg!r}: expected --gin.KEY=VALUE.")
            bindings.append(_as_binding(name[len("--gin."):], value))
        else:
            rest.append(arg)
        i += 1
    return GinArgs(tuple(files), tuple(bindings), tuple(paths), tuple(rest))


def add_search_paths(extra: Sequence[str] = ()) -> None:
    """Adds `gin/` of the repo (or installed package) plus `extra` to gin's search path."""
    for path in [*extra, str(GIN_DIR), str(_INSTALLED_GIN_DIR), os.getcwd()]:
        if os.path.isdir(path):
            gin.add_config_file_search_path(path)


def _resolve(path: str, search_paths: Sequence[str]) -> Optional[str]:
    for base in ["", *search_paths, str(GIN_DIR), str(_INSTALLED_GIN_DIR)]:
        candidate = os.path.join(base, path) if base else path
        if os.path.isfile(candidate):
            return candidate
    return None


def _walk(files: Sequence[str], search_paths: Sequence[str]) -> Iterator[Tuple[str, int, str]]:
    """(file, line number, line) of the gin files in gin's evaluation order (includes inline)."""
    seen: set = set()

    def visit(path: str) -> Iterator[Tuple[str, int, str]]:
        resolved = _resolve(path, search_paths)
        if resolved is None or resolved in seen:
            return
        seen.add(resolved)
        for n, line in enumerate(pathlib.Path(resolved).read_text().splitlines(), 1):
            m = re.match(r"\s*include\s+['\"]([^'\"]+)['\"]", line)
            if m:
                yield from visit(m.group(1))
            else:
                yield resolved, n, line

    for f in files:
        yield from visit(f)


def binding_locations(files: Sequence[str], bindings: Sequence[str],
                      search_paths: Sequence[str] = ()) -> Dict[str, List[str]]:
    """`NAME` (macro or `Configurable.param`) -> where it is assigned, in order ("file:line" or "flag ...").

    The last entry is the one gin uses (flags come after files).
    """
    locations: Dict[str, List[str]] = {}
    pattern = re.compile(r"^\s*([\w.]+(?:/[\w.]+)?)\s*=")
    block = None
    for path, n, line in _walk(files, search_paths):
        if re.match(r"^[\w./]+:\s*(#.*)?$", line):
            block = line.split(":")[0].strip()
            continue
        m = pattern.match(line)
        if not m:
            if line.strip() and not line.startswith((" ", "\t", "#")):
                block = None
            continue
        name = m.group(1)
        if line.startswith((" ", "\t")) and block:
            name = f"{block}.{name}"
        locations.setdefault(name, []).append(f"{path}:{n}")
    for b in bindings:
        m = pattern.match(b)
        if m:
            locations.setdefault(m.group(1), []).append(f"flag --gin.{m.group(1)} / --gin_bindings {b!r}")
    return locations


def _defined_and_used_macros() -> Tuple[set, set]:
    config = gin.config._CONFIG  # gin has no public API for listing macro definitions
    macro_fn = gin.config.get_configurable(gin.config.macro)
    defined = {scope for (scope, selector) in config if selector == "gin.macro"}
    used = {ref.scoped_selector.split("/")[0] if "/" in ref.scoped_selector else ref.scope_components[0]
            for ref in gin.config.iterate_references(config, to=macro_fn)}
    return defined, used


def parse(args: GinArgs, *, module_macro: str = "MIXTURE_OR_TASK_MODULE") -> None:
    """Parses files and bindings (two passes: lenient to import the task module, then strict).

    `module_macro` is read by this function itself, so it may be set without a binding using it.
    """
    add_search_paths(args.search_paths)
    if not args.files:
        raise GinConfigError("No --gin_file given; e.g. --gin_file=experiments/demo_tiny.gin "
                             f"(files under {GIN_DIR}).")
    for f in args.files:
        if _resolve(f, args.search_paths) is None:
            raise GinConfigError(f"--gin_file={f}: no such file (searched ., {', '.join(args.search_paths)} "
                                 f"and {GIN_DIR}); pass --gin_search_path to add a directory.")
    files = [os.path.abspath(_resolve(f, args.search_paths)) for f in args.files]
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(files, args.bindings, finalize_config=False, skip_unknown=True)
        module = gin.query_parameter(f"%{module_macro}")
    except (ValueError, KeyError):
        module = None
    except Exception as e:  # noqa: BLE001 - syntax errors: gin's message has file and line
        raise GinConfigError(f"Cannot parse gin config: {e}") from e
    for name in ([module] if isinstance(module, str) else list(module or [])):
        try:
            importlib.import_module(name)
        except ImportError as e:
            loc = binding_locations(args.files, args.bindings, args.search_paths).get(module_macro, ["?"])[-1]
            raise GinConfigError(f"{module_macro}={name!r} (set at {loc}) cannot be imported: {e}. Fix the module "
                                 "name or its PYTHONPATH.") from e
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(files, args.bindings, finalize_config=False)
    except Exception as e:  # noqa: BLE001
        raise GinConfigError(f"Bad gin config: {e}. Files: {list(args.files)}, bindings: {list(args.bindings)}.") from e
    defined, used = _defined_and_used_macros()
    unused = sorted(defined - used - {module_macro})
    if unused:
        locs = binding_locations(args.files, args.bindings, args.search_paths)
        lines = []
        for name in unused:
            close = difflib.get_close_matches(name, sorted(used), n=2)
            lines.append(f"  {name} (set at {', '.join(locs.get(name, ['?']))})"
                         + (f": did you mean {' or '.join(close)}?" if close else ""))
        raise GinConfigError("Unknown gin macro(s): set but used by no binding:\n" + "\n".join(lines)
                             + f"\nKnown macros: {', '.join(sorted(used))}.")
    try:
        gin.finalize()
    except Exception as e:  # noqa: BLE001
        raise GinConfigError(f"Gin config incomplete: {e}") from e


def explain_type_error(error: Exception, field_to_macro_prefix: str, args: GinArgs) -> str:
    """Adds the file/line (or flag) that set the field named in `error` (e.g. 'TrainConfig.train_steps')."""
    m = re.search(r"(\w+)\.(\w+)(?:\[|:)", str(error))
    if not m:
        return str(error)
    field = m.group(2)
    locs = binding_locations(args.files, args.bindings, args.search_paths)
    where = [loc for name, loc_list in locs.items() if name.endswith(f"{field_to_macro_prefix}.{field}")
             for loc in loc_list]
    macro = None
    for _, _, line in _walk(args.files, args.search_paths):
        mm = re.match(rf"\s+{field}\s*=\s*%(\w+)", line)
        if mm:
            macro = mm.group(1)
    if macro and macro in locs:
        where = locs[macro]
        return f"{error} Set by {macro} at {where[-1]}; fix it there or override with --gin.{macro}=..."
    if where:
        return f"{error} Set at {where[-1]}."
    return str(error)
