"""Runs a T5X grid (`dsbs sweep --emit t5x`): every run in turn, then its evaluation.

    python -m dsbs_jax.experiments.t5x_runner --grid gs://B/dsbs/grids/cqa     # what run_all.sh does
    python -m dsbs_jax.experiments.t5x_runner --grid /tmp/grid --processes 2 --devices_per_process 4

For each run of `grid.json`, in order:
* finished (its evaluation metrics at the final step exist): skipped;
* otherwise `python -m t5x.train` with the run's MODEL_DIR. T5X restores the newest checkpoint there
  before INITIAL_CHECKPOINT_PATH, so an interrupted run (a preemption, a kill) resumes; TRAIN_STEPS
  is absolute, so it ends at the planned step however often it restarts. A progress line shows the
  step (read from T5X's `[step] collection=train` log lines) and the ETA;
* then `python -m t5x.eval` of `checkpoint_{final}` on the grid's evaluation split.
A failed run (non-zero exit, or a step or metrics file missing afterwards) is reported in one line and
the next run starts. The summary at the end names every failed run with its log; the exit status is 1
if any failed. Every T5X process's output is kept in `{work_dir}/logs/`.

On a TPU slice every worker runs this same command (launch/run_grid_t5x.sh); JAX joins the hosts.
`--processes N` instead starts N local processes joined by `jax.distributed` (gloo on CPU), the CPU
rehearsal of a multi-host slice: when one dies, the others stop within about
`--heartbeat_timeout_seconds` and the run is reported failed, naming the lost process.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from dsbs_jax.data import fs
from dsbs_jax.experiments import t5x_grid
from dsbs_jax.experiments.t5x_grid import Grid, GridRun

_TRAIN_STEP = re.compile(r"\[(\d+)\] collection=train\b")
# JAX's coordination service, in the survivors' logs, when a process dies: its heartbeats stop
# (the coordinator notices) or the coordinator itself is gone (the others cannot reach it).
_DEAD_TASKS = re.compile(r"stopped sending heartbeats\):\s*([\d,\s]+?)\s*(?:\n|The tasks)")
_LOST_COORDINATOR = re.compile(r"(?:heartbeat|PollForError|coordination service).*(?:UNAVAILABLE|unreachable|"
                               r"Connection reset|Socket closed|failed to connect)", re.IGNORECASE)
_ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception)|[A-Z]\w+Error)(?::|$)")


@dataclasses.dataclass
class Outcome:
    name: str
    status: str  # "finished", "skipped", "failed"
    detail: str = ""
    accuracy: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    grid_dir: str
    work_dir: str
    only: Sequence[str] = ()
    processes: int = 1
    devices_per_process: Optional[int] = None
    heartbeat_timeout_seconds: int = 100
    extra_t5x_flags: Sequence[str] = ()
    progress: bool = True
    train_only: bool = False


def metrics_at(path: str, step: int) -> Optional[dict]:
    """The metrics line of `step` in a seqio `{task}-metrics.jsonl` file, or None."""
    if not fs.exists(path):
        return None
    with fs.GFile(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return next((line for line in reversed(lines) if line.get("step") == step), None)


def checkpoint_complete(model_dir: str, step: int) -> bool:
    """T5X's `checkpoint_{step}` is fully written (Orbax's commit marker, or the legacy msgpack file)."""
    directory = f"{model_dir}/checkpoint_{step}"
    return fs.exists(f"{directory}/commit_success.txt") or fs.exists(f"{directory}/checkpoint")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Progress:
    """One line per run: the step T5X reached and the ETA (tqdm when it is available and a terminal)."""

    def __init__(self, run: GridRun, enabled: bool):
        self.run, self.enabled, self.bar, self.started, self.first = run, enabled, None, time.time(), None
        self.last_print, self.last_step = 0.0, -1

    def step(self, step: int) -> None:
        if not self.enabled:
            return
        done = step - self.run.first_step
        if self.first is None:  # T5X's first line carries the restored step: no rate yet
            self.first, self.started = step, time.time()
            if step > self.run.first_step and not sys.stderr.isatty():
                print(f"  {self.run.name}: resumed from checkpoint_{step} in its MODEL_DIR", file=sys.stderr, flush=True)
            if not sys.stderr.isatty():
                self.last_step = step
                return
        if sys.stderr.isatty():
            import tqdm

            if self.bar is None:
                self.bar = tqdm.tqdm(total=self.run.finetune_steps, initial=done, unit="step", desc=self.run.name,
                                     file=sys.stderr, leave=False, dynamic_ncols=True)
            self.bar.update(done - self.bar.n)
            return
        now = time.time()
        if step <= self.last_step or (now - self.last_print < 30 and step != self.run.final_step):
            return
        self.last_print, self.last_step = now, step
        rate = (step - self.first) / max(now - self.started, 1e-9)
        eta = (self.run.final_step - step) / rate if rate > 0 else float("nan")
        eta_text = "?" if eta != eta else time.strftime("%H:%M:%S", time.gmtime(eta))
        print(f"  {self.run.name}: step {step} of {self.run.final_step} ({100 * done / self.run.finetune_steps:.0f} %), "
              f"{rate:.2f} steps/s, ETA {eta_text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _pump(stream: TextIO, log: TextIO, on_line=None) -> None:
    for line in stream:
        log.write(line)
        log.flush()  # the log is how a user (or a test) follows a run live
        if on_line is not None:
            on_line(line)
    log.flush()


def failure_reason(log_text: str) -> str:
    """One line saying why a T5X process failed, from the end of its output."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line[:400]
    for line in reversed(lines):
        if line.startswith(("F0", "E0", "F1", "E1")) or "Check failed" in line or "Fatal" in line:
            return line[:400]
    return lines[-1][:400] if lines else "no output"


def lost_peer(log_text: str, index: int) -> Optional[str]:
    """`lost peer process 1` when JAX's coordination service stopped this process for a dead peer."""
    dead = _DEAD_TASKS.search(log_text)
    if dead:
        tasks = [t for t in re.split(r"[,\s]+", dead.group(1)) if t and t != str(index)]
        if tasks:
            return f"lost peer process {', '.join(tasks)} (it stopped sending heartbeats)"
    if index != 0 and _LOST_COORDINATOR.search(log_text[-20000:]):
        return "lost peer process 0 (the coordinator)"
    return None


class Runner:
    def __init__(self, config: RunnerConfig, grid: Grid, log=print):
        self.config, self.grid, self.log = config, grid, log
        self.local_dir = os.path.join(config.work_dir, "grid")
        self.log_dir = os.path.join(config.work_dir, "logs")

    def stage(self) -> None:
        """A local copy of the grid's gin files: T5X reads gin from the local disk."""
        source = f"{self.config.grid_dir.rstrip('/')}/{t5x_grid.GIN_SUBDIR}"
        target = os.path.join(self.local_dir, t5x_grid.GIN_SUBDIR)
        shutil.rmtree(target, ignore_errors=True)
        for run in self.grid.runs:
            for relative in (run.train_gin, run.eval_gin):
                self._copy(f"{self.config.grid_dir.rstrip('/')}/{relative}", os.path.join(self.local_dir, relative))
        for relative in self.grid.extra_gin_files:
            self._copy(f"{source}/{relative}", os.path.join(target, relative))
        os.makedirs(self.log_dir, exist_ok=True)

    @staticmethod
    def _copy(src: str, dst: str) -> None:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with fs.GFile(src) as f:
            text = f.read()
        with open(dst, "w", encoding="utf-8") as f:
            f.write(text)

    def _environment(self) -> Dict[str, str]:
        env = {**os.environ, **self.grid.environment()}
        if self.config.processes > 1 or self.config.devices_per_process:
            env.update({"JAX_PLATFORMS": env.get("JAX_PLATFORMS") or "cpu",
                        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"})
            devices = self.config.devices_per_process
            if devices:
                flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
                env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
        return env

    def _commands(self, command: List[str]) -> List[List[str]]:
        """The command for each local process (python -m dsbs_jax.t5x_entry for several)."""
        module, flags = command[2], command[3:] + list(self.config.extra_t5x_flags)
        if self.config.processes == 1:
            return [[sys.executable, "-m", module, *flags]]
        port = _free_port()
        entry = "train" if module == "t5x.train" else "eval"
        return [[sys.executable, "-m", "dsbs_jax.t5x_entry", entry, f"--coordinator_address=127.0.0.1:{port}",
                 f"--process_count={self.config.processes}", f"--process_index={i}",
                 f"--heartbeat_timeout_seconds={self.config.heartbeat_timeout_seconds}", "--", *flags]
                for i in range(self.config.processes)]

    def _execute(self, run: GridRun, command: List[str], kind: str, progress: Optional[_Progress]) -> Optional[str]:
        """Runs one T5X command (on every local process); None on success, else why it failed."""
        commands = self._commands(command)
        logs, procs, pumps = [], [], []
        for index, argv in enumerate(commands):
            path = os.path.join(self.log_dir, f"{run.name}.{kind}" + (f".{index}" if len(commands) > 1 else "") + ".log")
            log = open(path, "w", encoding="utf-8")
            proc = subprocess.Popen(argv, cwd=self.local_dir, env=self._environment(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
            on_line = None
            if index == 0 and progress is not None:
                def on_line(line, progress=progress):
                    match = _TRAIN_STEP.search(line)
                    if match:
                        progress.step(int(match.group(1)))
            pump = threading.Thread(target=_pump, args=(proc.stdout, log, on_line), daemon=True)
            pump.start()
            logs.append((path, log))
            procs.append(proc)
            pumps.append(pump)
        ended = self._wait(procs)
        for pump in pumps:
            pump.join(timeout=30)
        for _, log in logs:
            log.close()
        if all(code == 0 for code, _ in ended):
            return None
        return self._explain(ended, [path for path, _ in logs])

    def _wait(self, procs: List[subprocess.Popen]) -> List[Tuple[object, float]]:
        """(exit code or "hung", when) per process; after a failure the others get a bounded time to stop."""
        ended: Dict[int, Tuple[object, float]] = {}
        deadline = None
        while len(ended) < len(procs):
            for i, p in enumerate(procs):
                if i not in ended and p.poll() is not None:
                    ended[i] = (p.returncode, time.time())
            if deadline is None and any(code != 0 for code, _ in ended.values()):
                deadline = time.time() + self.grace_seconds
            if deadline is not None and time.time() > deadline:
                for i, p in enumerate(procs):
                    if i not in ended:
                        p.kill()
                        p.wait()
                        ended[i] = ("hung", time.time())
            time.sleep(0.2)
        return [ended[i] for i in range(len(procs))]

    @property
    def grace_seconds(self) -> int:
        """How long survivors may take to stop by themselves: JAX notices a dead peer within its heartbeat timeout."""
        return 2 * self.config.heartbeat_timeout_seconds + 60

    def _explain(self, ended: List[Tuple[object, float]], log_paths: List[str]) -> str:
        """One line: each failed process, the first one to stop first, and the log to read."""
        failed = sorted((when, i, code) for i, (code, when) in enumerate(ended) if code != 0)
        first_time = failed[0][0]
        parts = []
        for when, index, code in failed:
            with open(log_paths[index], encoding="utf-8", errors="replace") as f:
                text = f.read()
            who = f"process {index} " if len(ended) > 1 else ""
            if code == "hung":
                parts.append(f"{who}did not stop within {self.grace_seconds} s of the first failure and was killed "
                             f"(log {log_paths[index]})")
                continue
            how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            later = f" {when - first_time:.0f} s later" if when > first_time + 0.5 else ""
            peer = lost_peer(text, index) if len(ended) > 1 else None
            why = peer if peer else ("" if code < 0 and when == first_time else failure_reason(text))
            parts.append(f"{who}{how}{later}" + (f", {why}" if why else "") + f" (log {log_paths[index]})")
        return "; ".join(parts)

    @staticmethod
    def _training_metrics(run: GridRun) -> str:
        """What T5X's inference evaluation during training writes for the run's gold-label task."""
        return f"{run.model_dir}/inference_eval/{run.eval_task}-metrics.jsonl"

    def run_one(self, index: int, run: GridRun) -> Outcome:
        prefix = f"[{index}/{len(self.grid.runs)}] {run.name}"
        metrics_file = self.grid.eval_metrics_file(run)
        done = metrics_at(metrics_file, run.final_step)
        if done is not None:
            self.log(f"{prefix}: finished earlier, accuracy {done.get('accuracy', float('nan')):.2f} % (skipped)")
            return Outcome(run.name, "skipped", accuracy=done.get("accuracy"))
        search = t5x_grid.gin_search_paths(self.local_dir)
        started = time.time()
        if not checkpoint_complete(run.model_dir, run.final_step):
            self.log(f"{prefix}: training steps {run.first_step} -> {run.final_step} in {run.model_dir}")
            progress = _Progress(run, self.config.progress)
            try:
                error = self._execute(run, t5x_grid.train_command(run, search), "train", progress)
            finally:
                progress.close()
            if error is None and not checkpoint_complete(run.model_dir, run.final_step):
                error = f"t5x.train exited 0 but wrote no checkpoint_{run.final_step}"
            if error is None and metrics_at(self._training_metrics(run), run.final_step) is None:
                # T5X drops inference eval of a task without metric functions, and with
                # concurrent_metrics=True it swallows a metric's exception: both leave no metrics line.
                error = (f"t5x.train exited 0 but evaluated no {run.eval_task} at step {run.final_step} "
                         f"({self._training_metrics(run)} has no such line): does the task have metric "
                         "functions, and do they run? (T5X skips the first and, with concurrent_metrics, hides "
                         "errors of the second)")
            if error is not None:
                self.log(f"{prefix}: FAILED in training: {error}")
                return Outcome(run.name, "failed", f"training: {error}")
        if self.config.train_only:
            self.log(f"{prefix}: trained to step {run.final_step} (--train_only: not evaluated)")
            return Outcome(run.name, "finished", "trained, not evaluated")
        self.log(f"{prefix}: evaluating checkpoint_{run.final_step} on {run.eval_task} ({self.grid.eval_split})")
        error = self._execute(run, t5x_grid.eval_command(self.grid, run, search), "eval", None)
        done = None if error else metrics_at(metrics_file, run.final_step)
        if error is None and done is None:
            error = f"t5x.eval exited 0 but wrote no step-{run.final_step} line to {metrics_file}"
        if error is not None:
            self.log(f"{prefix}: FAILED in evaluation: {error}")
            return Outcome(run.name, "failed", f"evaluation: {error}")
        minutes = (time.time() - started) / 60
        self.log(f"{prefix}: accuracy {done.get('accuracy', float('nan')):.2f} % ({minutes:.1f} min)")
        return Outcome(run.name, "finished", accuracy=done.get("accuracy"))

    def run_all(self) -> List[Outcome]:
        self.stage()
        runs = [r for r in self.grid.runs if not self.config.only or r.name in self.config.only]
        return [self.run_one(i, run) for i, run in enumerate(runs, 1)]


def summary(outcomes: Sequence[Outcome]) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("finished", "skipped", "failed")}
    lines = [f"{counts['finished']} finished, {counts['skipped']} skipped (finished earlier), {counts['failed']} failed"]
    lines += [f"  FAILED {o.name}: {o.detail}" for o in outcomes if o.status == "failed"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dsbs_jax import flags

    parser = flags.OneLineParser(prog="run_all.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", required=True, help="the --out directory of `dsbs sweep --emit t5x` (local or gs://)")
    parser.add_argument("--only", default="", help="comma-separated run names (default: every run)")
    parser.add_argument("--work_dir", help="local logs and gin copies (default: a new temporary directory)")
    parser.add_argument("--processes", type=flags.int_at_least(1), default=1,
                        help="local processes per run, joined by jax.distributed (CPU rehearsal of a multi-host slice)")
    parser.add_argument("--devices_per_process", type=flags.int_at_least(1),
                        help="fake CPU devices per process (XLA_FLAGS), with --processes")
    parser.add_argument("--heartbeat_timeout_seconds", type=flags.int_at_least(1), default=100,
                        help="with --processes: a peer silent this long is dead and the run fails (JAX's default 100)")
    parser.add_argument("--no_progress", action="store_true", help="no per-run progress line")
    parser.add_argument("--train_only", action="store_true", help="train every run, evaluate none (run again without it)")
    parser.add_argument("t5x_flags", nargs=argparse.REMAINDER, help="after --: extra flags for every t5x.train/eval")
    args = parser.parse_args(argv)
    try:
        grid = t5x_grid.read_grid(args.grid)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as error:
        return flags.report_error("run_all.sh", error, code=2)
    unknown = sorted(set(filter(None, args.only.split(","))) - {r.name for r in grid.runs})
    if unknown:
        print(f"run_all.sh: error: --only {','.join(unknown)}: not runs of {args.grid} (see its grid.json)",
              file=sys.stderr)
        return 2
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="dsbs_t5x_grid_")
    extra = args.t5x_flags[1:] if args.t5x_flags[:1] == ["--"] else args.t5x_flags
    config = RunnerConfig(grid_dir=args.grid, work_dir=os.path.abspath(work_dir), only=tuple(filter(None, args.only.split(","))),
                          processes=args.processes, devices_per_process=args.devices_per_process,
                          heartbeat_timeout_seconds=args.heartbeat_timeout_seconds, extra_t5x_flags=tuple(extra),
                          progress=not args.no_progress, train_only=args.train_only)
    print(f"grid {args.grid}: {len(grid.runs)} runs; T5X logs in {os.path.join(config.work_dir, 'logs')}", flush=True)
    outcomes = Runner(config, grid, log=lambda text: print(text, flush=True)).run_all()
    print(summary(outcomes), flush=True)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
