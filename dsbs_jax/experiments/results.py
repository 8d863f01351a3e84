"""Run results -> tables (markdown, CSV) with mean ± std over seeds, and a JSON of everything."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from dsbs_jax import methods
from dsbs_jax.data import fs

# A constant beside the methods, e.g. the teacher's few-shot accuracy: (row label, accuracy %).
Reference = Tuple[str, float]

# Row labels in the registry's order.
METHOD_LABELS = {m.name: m.label or m.name for m in methods.METHODS.values()}


def aggregate(runs: Sequence[Mapping]) -> Dict[Tuple[str, str, float], Dict[str, float]]:
    """{(method, size, fraction): {"mean", "std", "n", "seeds"}} of accuracy over seeds."""
    groups = defaultdict(list)
    for run in runs:
        groups[(run["method"], run["size"], float(run["fraction"]))].append(float(run["accuracy"]))
    out = {}
    for key, values in sorted(groups.items()):
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        out[key] = {"mean": mean, "std": std, "n": len(values)}
    return out


def markdown_table(runs: Sequence[Mapping], reference: Optional[Reference] = None,
                   unfinished: Sequence[Mapping] = ()) -> str:
    """Rows: method (and size); columns: data fractions; cells: accuracy mean ± std (n seeds).

    `reference` adds a row with the same value in every column (the teacher does not depend on the
    student's data); `unfinished` runs are listed under the table with their status, never dropped.
    """
    table = aggregate(runs)
    fractions = sorted({k[2] for k in table})
    rows = sorted({(k[0], k[1]) for k in table}, key=lambda r: (r[1], list(METHOD_LABELS).index(r[0])
                                                                  if r[0] in METHOD_LABELS else 99))
    header = "| method | size | " + " | ".join(f"{f:g} % data" for f in fractions) + " |"
    lines = [header, "|" + " --- |" * (2 + len(fractions))]
    for method, size in rows:
        cells = []
        for fraction in fractions:
            cell = table.get((method, size, fraction))
            cells.append("–" if cell is None else (f"{cell['mean']:.1f} ± {cell['std']:.1f} (n={cell['n']})"
                                                    if cell["n"] > 1 else f"{cell['mean']:.1f}"))
        lines.append(f"| {METHOD_LABELS.get(method, method)} | {size} | " + " | ".join(cells) + " |")
    if reference is not None:
        lines.append(f"| {reference[0]} | – | " + " | ".join(f"{reference[1]:.1f}" for _ in fractions) + " |")
    if unfinished:
        lines += ["", f"Not in the table ({len(unfinished)} runs):", ""]
        lines += [f"- {run['name']}: {run['status']}" + (f" ({run['detail']})" if run.get("detail") else "")
                  for run in unfinished]
    return "\n".join(lines) + "\n"


def csv_table(runs: Sequence[Mapping], reference: Optional[Reference] = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "size", "fraction", "accuracy_mean", "accuracy_std", "num_seeds"])
    for (method, size, fraction), cell in aggregate(runs).items():
        writer.writerow([method, size, fraction, f"{cell['mean']:.4f}", f"{cell['std']:.4f}", cell["n"]])
    if reference is not None:
        writer.writerow([reference[0], "", "", f"{reference[1]:.4f}", "", ""])
    return buffer.getvalue()


def write_all(out_dir: str, runs: List[Mapping], extra: Mapping = None, reference: Optional[Reference] = None,
              unfinished: Sequence[Mapping] = ()) -> Dict[str, str]:
    """Writes results.json, results.md, results.csv (atomically where local; gs:// works); returns their paths."""
    fs.makedirs(out_dir)
    payload = {"runs": runs, "summary": [{"method": m, "size": s, "fraction": f, **v}
                                         for (m, s, f), v in aggregate(runs).items()], **dict(extra or {})}
    if reference is not None:
        payload["reference"] = {"label": reference[0], "accuracy": reference[1]}
    if unfinished:
        payload["unfinished"] = list(unfinished)
    paths = {}
    for name, text in (("results.json", json.dumps(payload, indent=1, sort_keys=True)),
                       ("results.md", markdown_table(runs, reference, unfinished)),
                       ("results.csv", csv_table(runs, reference))):
        path = f"{out_dir.rstrip('/')}/{name}"
        with fs.GFile(path + ".tmp", "w") as f:
            f.write(text)
        fs.rename(path + ".tmp", path, overwrite=True)
        paths[name] = path
    return paths
