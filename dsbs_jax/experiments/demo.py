"""`dsbs demo`: Distilling step-by-step against standard finetuning on a laptop CPU, nothing downloaded.

    dsbs demo --out dsbs_demo_out            # 9 min on 2 CPU cores (17 min at load ~8; docs/results.md)
    dsbs demo --quick                        # a reduced grid for tests, 1.5 min
    dsbs demo --teacher smollm2              # a real LLM (llama.cpp + SmolLM2-135M) writes the rationales
    dsbs demo --teacher http://127.0.0.1:8000 --teacher_model NAME   # any OpenAI-compatible server

What it shows: the mechanism. On generated two-step word problems ("Mia has 7 apples, buys 5 more,
gives away 3: how many now?"), whose rationales spell out the intermediate sum, two arms train the
same small T5 student from scratch on the same nested data subsets (12.5, 25, 100 %), 3 seeds each:

  standard  x -> gold label (no prefix);
  dsbs      the paper's loss, alpha*L_label + (1-alpha)*L_rationale with alpha = 0.5, each term the mean
            token cross-entropy over its own targets, on the same examples every step
            (`predict: x -> label`, `explain: x -> rationale`); gold labels.

Both are scored on the same 300 test questions (exact match of the answer) and reported as mean ± std
over seeds, with one verdict per fraction: DSbS ahead, behind, or within noise (|difference of means|
<= sqrt(std_standard^2 + std_dsbs^2), the spread of the difference between one run of each arm).

What it does not show: the paper's gains. Those come from pretrained T5 checkpoints (220M-11B
parameters) distilling PaLM's rationales on real benchmarks; this is a 2+2-layer student trained from
scratch for a few hundred steps on a toy task, and whichever arm wins here says nothing about that.
Every stage runs through the real code path: the rationale job (default teacher: the generator's
own annotations) -> TFRecords + manifest -> SeqIO tasks -> the embedded trainer -> seqio evaluation,
via `dsbs sweep`'s grid, which writes results.md/.csv/.json and accuracy_vs_data.png into --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence

from dsbs_jax import flags
from dsbs_jax.experiments import demo_data
from dsbs_jax.rationales.backends import TeacherError
from dsbs_jax.rationales.local_server import LlamaServerError

# Method-registry names (dsbs_jax/methods.py): the only place the demo names its arms.
STANDARD, DSBS = "standard", "dsbs"
METHODS = (STANDARD, DSBS)


@dataclasses.dataclass(frozen=True)
class DemoSize:
    """One demo scale: data sizes, the grid and the training budget shared by both arms."""

    train: int
    valid: int
    test: int
    fractions: tuple
    seeds: tuple
    train_steps: int


    def splits(self) -> Dict[str, int]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


FULL = DemoSize(train=2000, valid=50, test=300, fractions=(12.5, 25.0, 100.0), seeds=(0, 1, 2), train_steps=250)
QUICK = DemoSize(train=200, valid=20, test=60, fractions=(50.0, 100.0), seeds=(0, 1), train_steps=20)
# A real LLM writes ~1 rationale/s here, so its default training set is smaller (--train_size overrides).
SMOLLM2_TRAIN = 300
# Training settings, tuned on 2 CPU cores (numbers in docs/results.md, "dsbs demo").
STUDENT_SIZE = "mini"  # dsbs_jax/experiments/sweep.py SIZES: T5 1.1 layout, 2+2 layers, d_model 64
BATCH_SIZE = 32
OPTIMIZER, LEARNING_RATE = "adamw", 3e-3
FEATURE_LENGTHS = {"inputs": 32, "targets": 16}
MAX_DECODE_LENGTH = 4  # the answer is one or two pieces, then EOS
VOCAB_SIZE = 256
HEADLINE = """dsbs demo: standard finetuning vs Distilling step-by-step (the paper's loss, alpha = 0.5, gold labels)
on generated two-step word problems whose rationales spell out the intermediate sum.
It shows the mechanism on a small T5 student trained from scratch; it does not reproduce the paper's
gains, which come from pretrained T5 (220M-11B parameters) on real benchmarks.
"""
# Rationale-job throughput of SmolLM2-135M on llama.cpp with the demo's few-shot prompt (outputs/s):
# ~1.5 on 2 idle cores (benchmarks/RESULTS.md measured 1.2 with 7x longer prompts), 0.45 measured on
# the development machine at load average 13-17.
SMOLLM2_OUTPUTS_PER_S = (1.5, 0.45)


def build_data(out: str, sizes: Mapping[str, int], teacher: str, teacher_model: Optional[str], seed: int) -> str:
    """Writes the gold data, runs the rationale job on train, and returns the dataset dir for tasks."""
    from dsbs_jax.data import tfrecords
    from dsbs_jax.rationales.job import JobConfig, run_job

    demo_data.register_spec()
    gold_dir = os.path.join(out, "gold", demo_data.DATASET)
    data_root = os.path.join(out, "data")
    data_dir = os.path.join(data_root, demo_data.DATASET)
    splits = demo_data.generate(dict(sizes), seed)
    if not os.path.exists(os.path.join(gold_dir, tfrecords.MANIFEST)):
        for split, examples in splits.items():
            tfrecords.write_split(gold_dir, split, examples)
    job = dict(dataset=demo_data.DATASET, split="train", out=data_root, src=gold_dir, src_format="tfrecords")
    if teacher == "annotations":
        run_job(JobConfig(**job, teacher="annotations"))
    elif teacher == "smollm2":
        from dsbs_jax.rationales.local_server import start_llama_server

        n = len(splits["train"])
        fast, slow = SMOLLM2_OUTPUTS_PER_S
        print(f"      expected: {n / fast / 60:.0f}-{n / slow / 60:.0f} min for {n} rationales ({fast} outputs/s on 2 "
              f"idle cores, {slow} on shared ones), then the training stage; the bar below shows the ETA. "
              "Stopping is safe: a rerun resumes.", flush=True)
        with start_llama_server() as url:
            run_job(JobConfig(**job, base_url=url, model="smollm2", max_tokens=40, concurrency=2))
    else:
        run_job(JobConfig(**job, base_url=teacher, model=teacher_model or "default", max_tokens=64))
    for split in ("valid", "test"):  # evaluation data: gold labels only
        tfrecords.write_split(data_dir, split, [e.replace(rationales=()) for e in splits[split]])
    return data_dir


def verdicts(summary: Sequence[Mapping]) -> List[dict]:
    """Per fraction: DSbS minus standard (mean accuracy), the noise band, and the word for it.

    noise = sqrt(std_standard^2 + std_dsbs^2): the standard deviation of the difference between one
    run of each arm, from the seed-to-seed spread. "within noise" when |difference| <= noise.
    """
    cells = {(s["method"], float(s["fraction"])): s for s in summary}
    out = []
    for fraction in sorted({f for _, f in cells}):
        standard, dsbs = cells.get((STANDARD, fraction)), cells.get((DSBS, fraction))
        if standard is None or dsbs is None:
            continue
        diff = dsbs["mean"] - standard["mean"]
        noise = math.hypot(standard["std"], dsbs["std"])
        word = "within noise" if abs(diff) <= noise else ("DSbS ahead" if diff > 0 else "DSbS behind")
        out.append({"fraction": fraction, "standard_mean": standard["mean"], "dsbs_mean": dsbs["mean"],
                    "difference": diff, "noise": noise, "verdict": word, "num_seeds": min(standard["n"], dsbs["n"])})
    return out


def verdict_line(rows: Sequence[Mapping]) -> str:
    """One line, e.g. `verdict: 12.5 % DSbS ahead (+8.1 ± 3.0) | 25 % within noise (+1.0 ± 2.2) | ...`."""
    return "verdict: " + " | ".join(f"{r['fraction']:g} % {r['verdict']} ({r['difference']:+.1f} ± {r['noise']:.1f})"
                                    for r in rows)


def _stop_on_sigterm():
    """SIGTERM unwinds like Ctrl-C, so `with start_llama_server()` stops the server on the way out.
    Returns the previous handler (restored when `main` returns)."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache: every run of an arm compiles the same step, so runs after
    the first load it from disk instead of compiling it again."""
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _update_json(path: str, extra: Mapping) -> None:
    with open(path) as f:
        payload = json.load(f)
    payload.update(extra)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = flags.OneLineParser(prog="dsbs demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="dsbs_demo_out")
    p.add_argument("--teacher", default="annotations", help="annotations | smollm2 | an OpenAI-compatible base URL")
    p.add_argument("--teacher_model", help="model name for --teacher URL")
    p.add_argument("--quick", action="store_true", help=f"a reduced grid for tests: {QUICK}")
    p.add_argument("--fractions", help="comma-separated %% of the training data (default: 12.5,25,100)")
    p.add_argument("--seeds", help="comma-separated student seeds (default: 0,1,2)")
    p.add_argument("--train_steps", type=int)
    p.add_argument("--train_size", type=int,
                   help=f"generated training questions (default: {FULL.train}; {SMOLLM2_TRAIN} with --teacher smollm2)")
    p.add_argument("--seed", type=int, default=0, help="dataset generation seed")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    size = QUICK if a.quick else FULL
    try:
        fractions = tuple(float(f) for f in a.fractions.split(",")) if a.fractions else size.fractions
        seeds = tuple(int(s) for s in a.seeds.split(",")) if a.seeds else size.seeds
    except ValueError:
        print(f"dsbs demo: --fractions {a.fractions!r} / --seeds {a.seeds!r} must be comma-separated numbers, "
              "e.g. --fractions 12.5,25,100 --seeds 0,1,2", file=sys.stderr)
        return 2
    problem = flags.check_writable(a.out, "--out")
    if problem:
        print(f"dsbs demo: error: {problem}", file=sys.stderr)
        return 2
    size = dataclasses.replace(
        size, fractions=fractions, seeds=seeds, train_steps=a.train_steps or size.train_steps,
        train=a.train_size or (SMOLLM2_TRAIN if a.teacher == "smollm2" and not a.quick else size.train))
    previous = _stop_on_sigterm()
    try:
        return run(a, size)
    except KeyboardInterrupt:
        print("\ndsbs demo: stopped (finished runs are kept in --out; the same command resumes).", file=sys.stderr)
        return 130
    except (TeacherError, LlamaServerError) as error:
        return flags.report_error("dsbs demo", error)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(a: argparse.Namespace, size: DemoSize) -> int:
    started = time.time()
    print(HEADLINE, flush=True)
    print(f"[1/4] data ({size.train} train / {size.test} test questions) + rationale job (teacher: {a.teacher})",
          flush=True)
    data_dir = build_data(a.out, size.splits(), a.teacher, a.teacher_model, a.seed)
    splits = demo_data.generate(size.splits(), a.seed)
    print("[2/4] vocabulary (SentencePiece trained on the generated training text)", flush=True)
    from dsbs_jax.data.vocab import train_sentencepiece

    spm_path = os.path.join(a.out, "spm.model")
    if not os.path.exists(spm_path):
        spm_path = train_sentencepiece(demo_data.vocabulary_texts(splits["train"]), os.path.join(a.out, "spm"),
                                       vocab_size=VOCAB_SIZE, model_type="bpe")
    runs_total = len(METHODS) * len(size.fractions) * len(size.seeds)
    print(f"[3/4] training and evaluating {runs_total} students: {', '.join(METHODS)} x fractions "
          f"{', '.join(f'{f:g}' for f in size.fractions)} % x seeds {', '.join(map(str, size.seeds))}, "
          f"{size.train_steps} steps each", flush=True)
    from dsbs_jax.experiments import plots, results, sweep

    enable_compilation_cache(os.path.join(a.out, "jax_cache"))

    config = sweep.SweepConfig(
        dataset=demo_data.DATASET, data_dir=data_dir, out_dir=a.out, spm_path=spm_path, methods=METHODS,
        fractions=size.fractions, seeds=size.seeds, sizes=(STUDENT_SIZE,), train_steps=size.train_steps,
        batch_size=BATCH_SIZE, optimizer=OPTIMIZER, learning_rate=LEARNING_RATE,
        task_feature_lengths=dict(FEATURE_LENGTHS), eval_split="test", max_decode_length=MAX_DECODE_LENGTH,
        eval_batch_size=100, progress_bar=False)
    runs = sweep.run_sweep(config)

    json_path = os.path.join(a.out, "results.json")
    with open(json_path) as f:
        summary = json.load(f)["summary"]
    rows = verdicts(summary)
    line = verdict_line(rows)
    guess, chance = demo_data.majority_baseline(splits["train"], splits["test"])
    elapsed = time.time() - started
    _update_json(json_path, {"verdict": rows, "verdict_line": line, "verdict_rule": verdicts.__doc__.split("\n\n")[1],
                             "chance": {"answer": guess, "accuracy": chance}, "wall_time_s": round(elapsed, 1),
                             "teacher": a.teacher, "demo_size": dataclasses.asdict(size)})
    plots.plot_data_size(runs, os.path.join(a.out, "accuracy_vs_data.png"), baseline=(f"always {guess!r}", chance),
                         title=f"{demo_data.DATASET}: accuracy (mean ± std, {len(size.seeds)} seeds)")
    print(f"[4/4] results: test accuracy (%) on {size.test} questions, mean ± std over {len(size.seeds)} seeds\n")
    print(results.markdown_table(runs))
    print(f"chance: always answering {guess!r} scores {chance:.1f} %")
    print(line)
    print("(a from-scratch toy student shows the mechanism, not the paper's pretrained-T5 gains)")
    print(f"wrote results.md, results.csv, results.json and accuracy_vs_data.png in {a.out} "
          f"({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
