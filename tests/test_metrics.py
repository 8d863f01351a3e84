"""Metrics: exact-match accuracy, the safe equation evaluator, single-task label extraction, token F1."""
import pytest

from tasks import metrics


@pytest.mark.parametrize("text, value", [
    ("( 84.0 / 2.0 )", 42.0), ("(84 / 2)", 42.0), ("2 + 3 * 4", 14.0), ("(2 + 3) * 4", 20.0),
    ("-3 + 5", 2.0), ("- ( 2 - 7 )", 5.0), ("2 ** 3", 8.0), ("7 - 2 - 1", 4.0), ("8 / 4 / 2", 1.0),
])
def test_equation_values(text, value):
    assert metrics.evaluate_equation(text) == pytest.approx(value)


@pytest.mark.parametrize("text", [
    "1 / 0", "__import__('os')", "x + 1", "abs(-1)", "(1).real", "1 < 2", "", "2 +", "[1, 2]", "2 ** 1000", "'a' * 3",
])
def test_equation_rejects_everything_else(text):
    assert metrics.evaluate_equation(text) is None


def test_equation_accuracy_uses_numeric_value_with_tolerance():
    result = metrics.equation_accuracy(["( 84.0 / 2.0 )", "( 1.0 / 3.0 )", "( 2.0 + 2.0 )", "( 5.0 - 1.0 )"],
                                       ["(84 / 2)", "0.33333", "2 * 2 + 1", "open('x')"])
    assert result == {"accuracy": 50.0}


def test_accuracy_is_exact_match_after_strip():
    assert metrics.accuracy(["yes", "no", "maybe"], [" yes", "No", "maybe\n"]) == {"accuracy": pytest.approx(200 / 3)}


def test_single_task_label_extraction():
    assert metrics.extract_single_label("The sky is blue. So the answer is blue") == "blue"
    assert metrics.extract_single_label("a So the answer is b So the answer is c") == "c"
    assert metrics.extract_single_label("no separator") == "no separator"
    assert metrics.single_postprocessor(b" r. So the answer is entailment ") == "entailment"


def test_token_f1():
    assert metrics.token_f1(["a b c d"], ["a b c d"]) == {"token_f1": 100.0}
    assert metrics.token_f1(["a b c d"], ["a b x y"])["token_f1"] == pytest.approx(50.0)
    assert metrics.token_f1(["a b"], ["z"]) == {"token_f1": 0.0}
