"""Metrics and postprocessors: exact-match accuracy, equation value (SVAMP/ASDiv), token F1.

Predictions and targets arrive as decoded strings (seqio postprocessors strip them).
"""
from __future__ import annotations

import collections
from typing import Callable, Mapping, Sequence

from dsbs_jax.data.labels import EQUATION_TOLERANCE, evaluate_equation, labels_match  # noqa: F401
from dsbs_jax.methods import SINGLE_SEPARATOR


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Mapping[str, float]:
    """Exact string match after stripping, in percent (T5X/SeqIO convention)."""
    hits = sum(str(t).strip() == str(p).strip() for t, p in zip(targets, predictions))
    return {"accuracy": 100.0 * hits / max(len(targets), 1)}


def equation_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Mapping[str, float]:
    """Accuracy where a prediction is right if its equation's value equals the gold one's (|Δ| ≤ 1e-4)."""
    hits = sum(labels_match("equation", str(p), str(t)) for t, p in zip(targets, predictions))
    return {"accuracy": 100.0 * hits / max(len(targets), 1)}


def token_f1(targets: Sequence[str], predictions: Sequence[str]) -> Mapping[str, float]:
    """Mean bag-of-words F1 between rationale and prediction (SQuAD-style), in percent."""
    total = 0.0
    for target, prediction in zip(targets, predictions):
        gold, found = str(target).lower().split(), str(prediction).lower().split()
        common = sum((collections.Counter(gold) & collections.Counter(found)).values())
        if common:
            precision, recall = common / len(found), common / len(gold)
            total += 2 * precision * recall / (precision + recall)
        else:
            total += float(gold == found)
    return {"token_f1": 100.0 * total / max(len(targets), 1)}


LABEL_METRICS: Mapping[str, Callable] = {"accuracy": accuracy, "equation": equation_accuracy}


def strip_postprocessor(output, example=None, is_target=False) -> str:
    """Decoded text with surrounding whitespace removed."""
    del example, is_target
    return output.decode("utf-8").strip() if isinstance(output, bytes) else str(output).strip()


def extract_single_label(text: str) -> str:
    """The label part of a single-task output `"{rationale} So the answer is {label}"`."""
    head, separator, label = text.rpartition(SINGLE_SEPARATOR.strip())
    return (label if separator else text).strip()


def single_postprocessor(output, example=None, is_target=False) -> str:
    """Postprocessor of the single-task ablation: keep only the label after the separator."""
    return extract_single_label(strip_postprocessor(output, example, is_target))
