"""`dsbs sweep --collect --out GRID`: a T5X grid's test accuracies as the local sweep's tables and plots.

Reads `grid.json` and, for every run, the seqio metrics file that its t5x.eval wrote
(`{MODEL_DIR}/eval_{split}/inference_eval/{task}-metrics.jsonl`, local or gs://) at the run's final
step. Writes `results.md`, `results.csv`, `results.json` and `accuracy_vs_data.png` (and
`accuracy_vs_size.png` for several sizes) into the grid directory, like `dsbs sweep`. The teacher's
few-shot accuracy on the test split (the data manifest's `teacher_gold_agreement`, the share of
parsed teacher labels that equal the gold label) is a row and a dashed line, as in the paper's
figures. Runs that are missing or unfinished are listed with their state, never dropped.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from dsbs_jax.data import fs
from dsbs_jax.experiments import plots, results, t5x_grid
from dsbs_jax.experiments.t5x_runner import checkpoint_complete, metrics_at


def run_state(grid: t5x_grid.Grid, run: t5x_grid.GridRun) -> Tuple[str, Optional[float], str]:
    """(status, accuracy, detail): finished, not evaluated, training, or not started."""
    done = metrics_at(grid.eval_metrics_file(run), run.final_step)
    if done is not None:
        return "finished", float(done["accuracy"]), ""
    if checkpoint_complete(run.model_dir, run.final_step):
        return "not evaluated", None, f"checkpoint_{run.final_step} exists, no test metrics yet"
    if fs.exists(run.model_dir):
        steps = sorted(int(n.rstrip("/").split("_")[1]) for n in fs.listdir(run.model_dir)
                       if n.rstrip("/").startswith("checkpoint_") and n.rstrip("/").split("_")[1].isdigit())
        latest = f"latest checkpoint_{steps[-1]}" if steps else "no checkpoint yet"
        return "unfinished", None, f"{latest} of {run.final_step}"
    return "missing", None, f"no {run.model_dir}"


def teacher_reference(grid: t5x_grid.Grid, split: str) -> Optional[Tuple[str, float]]:
    """("Teacher, few-shot CoT (test)", accuracy %) from the data manifest, if it records one."""
    from dsbs_jax.data import tfrecords

    for root in grid.data_root.split(","):  # several roots: the first that scored the teacher on the split
        try:
            manifest = tfrecords.read_manifest(f"{root.rstrip('/')}/{grid.dataset}")
        except FileNotFoundError:
            continue
        agreement = manifest.get("splits", {}).get(split, {}).get("teacher_gold_agreement")
        if agreement is not None:
            break
    else:
        return None
    model = manifest.get("teacher", {}).get("model") or "teacher"
    return f"Teacher ({model}), few-shot CoT, {split}", 100.0 * float(agreement)


def collect(grid_dir: str, log=print) -> List[Dict]:
    """Writes the grid's tables and plots into `grid_dir`; returns every run with its status."""
    grid = t5x_grid.read_grid(grid_dir)
    rows = []
    for run in grid.runs:
        status, accuracy, detail = run_state(grid, run)
        rows.append({**dataclasses.asdict(run), "status": status, "accuracy": accuracy, "detail": detail})
    finished = [r for r in rows if r["status"] == "finished"]
    unfinished = [r for r in rows if r["status"] != "finished"]
    reference = teacher_reference(grid, grid.eval_split)
    paths = results.write_all(grid_dir, finished, extra={"dataset": grid.dataset, "grid": grid_dir},
                              reference=reference, unfinished=unfinished)
    if finished:
        title = f"{grid.dataset}: T5X test accuracy vs % of training data"
        paths["plot"] = plots.plot_data_size(finished, f"{grid_dir.rstrip('/')}/accuracy_vs_data.png", title=title,
                                             baseline=reference)
        if len({r["size"] for r in finished}) > 1:
            plots.plot_model_size(finished, f"{grid_dir.rstrip('/')}/accuracy_vs_size.png",
                                  title=f"{grid.dataset}: T5X test accuracy vs model size", baseline=reference)
    log(f"{len(finished)} of {len(rows)} runs finished; tables and plots in {grid_dir}"
        + "".join(f"\n  {r['name']}: {r['status']} ({r['detail']})" for r in unfinished))
    return rows
