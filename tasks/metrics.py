"""Metrics and postprocessors: exact-match accuracy, equation value (SVAMP/ASDiv), token F1.

Predictions and targets arrive as decoded strings (seqio postprocessors strip them).
"""
from __future__ import annotations

import ast
import collections
import operator
from typing import Callable, Mapping, Optional, Sequence

EQUATION_TOLERANCE = 1e-4
# The single-task target is "{rationale}{SINGLE_SEPARATOR}{label}" (see registry.py).
SINGLE_SEPARATOR = " So the answer is "

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate_equation(text: str) -> Optional[float]:
    """The numeric value of an arithmetic expression such as `( 84.0 / 2.0 )`, or None.

    Walks the parsed AST and allows only numbers, + - * / // % ** and parentheses: names,
    calls, attributes, comparisons and anything else make the expression invalid (never `eval`).
    Division by zero, overflow and huge powers are invalid too.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def _eval(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return _eval(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](_eval(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = _eval(node.left), _eval(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _BINARY[type(node.op)](left, right)
        raise ValueError(f"disallowed syntax: {type(node).__name__}")

    try:
        value = _eval(tree)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Mapping[str, float]:
    """Exact string match after stripping, in percent (T5X/SeqIO convention)."""
    hits = sum(str(t).strip() == str(p).strip() for t, p in zip(targets, predictions))
    return {"accuracy": 100.0 * hits / max(len(targets), 1)}


def equation_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Mapping[str, float]:
    """Accuracy where a prediction is right if its equation's value equals the gold one's (|Δ| ≤ 1e-4)."""
    hits = 0
    for target, prediction in zip(targets, predictions):
        gold, found = evaluate_equation(target), evaluate_equation(prediction)
        hits += gold is not None and found is not None and abs(gold - found) <= EQUATION_TOLERANCE
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
