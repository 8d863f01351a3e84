"""`dsbs demo`: the whole method on a laptop CPU, nothing downloaded.

    dsbs demo --out dsbs_demo_out            # ~6-9 min on 2 CPU cores (see README)
    dsbs demo --teacher smollm2              # a real LLM (llama.cpp + SmolLM2-135M) writes the rationales
    dsbs demo --teacher http://127.0.0.1:8000 --teacher_model NAME   # any OpenAI-compatible server

Stages, each through the real code path: a generated dataset of two-step word problems with
annotated rationales -> the rationale job (default teacher: the annotations themselves) ->
TFRecords + manifest -> SeqIO tasks and mixtures -> the embedded trainer -> seqio evaluation.
It compares standard finetuning with Distilling step-by-step on the same data subsets and
writes results.md/.csv/.json and accuracy_vs_data.png into --out.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

from dsbs_jax.experiments import demo_data, sweep

FULL_SIZES = {"train": 2000, "valid": 100, "test": 300}
QUICK_SIZES = {"train": 400, "valid": 50, "test": 100}


def build_data(out: str, sizes, teacher: str, teacher_model: Optional[str], seed: int) -> str:
    """Writes the gold data, runs the rationale job on train, and returns the dataset dir for tasks."""
    from dsbs_jax.data import tfrecords
    from dsbs_jax.rationales.job import JobConfig, run_job

    demo_data.register_spec()
    gold_dir = os.path.join(out, "gold", demo_data.DATASET)
    data_root = os.path.join(out, "data")
    data_dir = os.path.join(data_root, demo_data.DATASET)
    splits = demo_data.generate(sizes, seed)
    if not os.path.exists(os.path.join(gold_dir, tfrecords.MANIFEST)):
        for split, examples in splits.items():
            tfrecords.write_split(gold_dir, split, examples)
    job = dict(dataset=demo_data.DATASET, split="train", out=data_root, src=gold_dir, src_format="tfrecords")
    if teacher == "annotations":
        run_job(JobConfig(**job, teacher="annotations"))
    elif teacher == "smollm2":
        from dsbs_jax.rationales.local_server import start_llama_server

        with start_llama_server() as url:
            run_job(JobConfig(**job, base_url=url, model="smollm2", max_tokens=48, concurrency=2))
    else:
        run_job(JobConfig(**job, base_url=teacher, model=teacher_model or "default", max_tokens=64))
    for split in ("valid", "test"):  # evaluation data: gold labels only
        tfrecords.write_split(data_dir, split, [e.replace(rationales=()) for e in splits[split]])
    return data_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="dsbs demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="dsbs_demo_out")
    p.add_argument("--teacher", default="annotations", help="annotations | smollm2 | an OpenAI-compatible base URL")
    p.add_argument("--teacher_model", help="model name for --teacher URL")
    p.add_argument("--quick", action="store_true", help="a reduced size for tests (~2 min)")
    p.add_argument("--fractions", default="25,100")
    p.add_argument("--methods", default="standard,dsbs_llm")
    p.add_argument("--seeds", default="0")
    p.add_argument("--train_steps", type=int)
    p.add_argument("--seed", type=int, default=0, help="dataset generation seed")
    a = p.parse_args(argv)

    started = time.time()
    sizes = QUICK_SIZES if a.quick else FULL_SIZES
    steps = a.train_steps or (60 if a.quick else 600)
    print(f"[1/4] data + rationale job (teacher: {a.teacher})")
    data_dir = build_data(a.out, sizes, a.teacher, a.teacher_model, a.seed)
    print("[2/4] vocabulary (SentencePiece trained on the generated text)")
    from dsbs_jax.data.vocab import train_sentencepiece

    spm_path = os.path.join(a.out, "spm.model")
    if not os.path.exists(spm_path):
        spm_path = train_sentencepiece(demo_data.vocabulary_texts(demo_data.generate(sizes, a.seed)),
                                       os.path.join(a.out, "spm"), vocab_size=256)
    print(f"[3/4] training and evaluating: methods {a.methods} x fractions {a.fractions} % x seeds {a.seeds}")
    config = sweep.SweepConfig(
        dataset=demo_data.DATASET, data_dir=data_dir, out_dir=a.out, spm_path=spm_path,
        methods=tuple(a.methods.split(",")), fractions=tuple(float(f) for f in a.fractions.split(",")),
        seeds=tuple(int(s) for s in a.seeds.split(",")), sizes=("mini",), train_steps=steps, batch_size=32,
        learning_rate=3e-3, task_feature_lengths={"inputs": 64, "targets": 48}, eval_split="test",
        max_decode_length=8, eval_batch_size=100)
    runs = sweep.run_sweep(config)
    from dsbs_jax.experiments.results import markdown_table

    print("[4/4] results (test accuracy, %)\n")
    print(markdown_table(runs))
    print(f"wrote {os.path.join(a.out, 'results.md')}, results.csv, results.json, accuracy_vs_data.png "
          f"in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
