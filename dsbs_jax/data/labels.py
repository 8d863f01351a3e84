"""When two labels agree: exact text, or the numeric value of an equation (SVAMP, ASDiv).

Pure Python (no TensorFlow): the manifest's teacher/gold agreement and the SeqIO metrics
(`tasks/metrics.py`) use the same rule, so an import's agreement matches the metric's accuracy.
"""
from __future__ import annotations

import ast
import operator
from typing import Optional

EQUATION_TOLERANCE = 1e-4

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


def labels_match(metric: str, prediction: Optional[str], gold: Optional[str]) -> bool:
    """Whether `prediction` scores as `gold` under `metric` ("accuracy" or "equation")."""
    if prediction is None or gold is None:
        return False
    if metric == "equation":
        found, expected = evaluate_equation(prediction), evaluate_equation(gold)
        return found is not None and expected is not None and abs(found - expected) <= EQUATION_TOLERANCE
    return prediction.strip() == gold.strip()
