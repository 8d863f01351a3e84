"""The demo's own dataset: two-step word problems whose rationale spells out the intermediate result.

    "Mia has 4 apples , buys 5 more and then gives away 3 . How many apples now ?"
    label "6", rationale "4 + 5 = 9 . 9 - 3 = 6 ."

The label needs two steps; the rationale writes the intermediate sum (9) that the answer is
computed from, which is the signal Distilling step-by-step trains the student on. Numbers are 1-5
(a, b) and 1..a+b-1 (c), so answers range over 1-9 and a 2+2-layer student trained from scratch
learns the task in a few hundred steps on a CPU (with 1-9 it stays near chance for that long).
Test questions are new sentences, but the 125 (a, b, c) combinations recur, so at 100 % of the data
every combination has been seen in training; smaller fractions leave some unseen. Answers are not
uniform: `majority_baseline` gives the accuracy of always guessing the most frequent answer (the
chance line the demo prints). Numbers and punctuation are separated by spaces so that SentencePiece
never fuses "3." into one piece. Generated from a seed: no third-party data ships with the package.
"""
from __future__ import annotations

import collections
import random
from typing import Dict, List, Mapping, Sequence, Union

from dsbs_jax.data import parsers, schema, specs

DATASET = "demo_math"
NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben")
ITEMS = ("apples", "pens", "cards", "stamps", "shells", "coins", "books", "marbles")
GAIN = ("buys {b} more", "finds {b} more", "gets {b} more from a friend")
LOSS = ("gives away {c}", "loses {c}", "sells {c}")
MAX_NUMBER = 5


def spec() -> specs.DatasetSpec:
    """The demo's DatasetSpec: free-form numeric labels, exact-match accuracy."""
    return specs.DatasetSpec(
        name=DATASET, format_input=lambda raw: raw["input"], gold_label=lambda raw: raw.get("label"),
        parser=parsers.TeacherParser(("Q:",), "So the answer is", "free"), metric="accuracy",
        prompt_file="demo_math.txt", stop_sequences=("\n\nQ:",))


def register_spec() -> specs.DatasetSpec:
    return specs.register_spec(spec(), overwrite=True)


def make_example(rng: random.Random, split: str, index: int) -> schema.Example:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(1, MAX_NUMBER), rng.randint(1, MAX_NUMBER)
    c = rng.randint(1, a + b - 1)
    total, answer = a + b, a + b - c
    gain, loss = rng.choice(GAIN).format(b=b), rng.choice(LOSS).format(c=c)
    question = f"{name} has {a} {item} , {gain} and then {loss} . How many {item} now ?"
    rationale = f"{a} + {b} = {total} . {total} - {c} = {answer} ."
    return schema.Example(id=f"{DATASET}-{split}-{index}", dataset=DATASET, split=split, input=question,
                          label=str(answer), rationales=(rationale,), teacher_meta={"annotation": "generated"})


def generate(sizes: Dict[str, int], seed: int = 0) -> Dict[str, List[schema.Example]]:
    """{split: examples}, disjoint questions across splits, deterministic in `seed`."""
    rng = random.Random(seed)
    seen, out = set(), {}
    for split, size in sizes.items():
        examples = []
        while len(examples) < size:
            example = make_example(rng, split, len(examples))
            if example.input not in seen:
                seen.add(example.input)
                examples.append(example)
        out[split] = examples
    return out


def majority_baseline(train: Sequence[schema.Example], test: Sequence[schema.Example]) -> tuple[str, float]:
    """(most frequent train answer, % of test examples with that answer): a constant guess's accuracy."""
    answer = collections.Counter(e.label for e in train).most_common(1)[0][0]
    return answer, 100.0 * sum(e.label == answer for e in test) / max(len(test), 1)


def vocabulary_texts(train: Union[Sequence[schema.Example], Mapping[str, Sequence[schema.Example]]]) -> List[str]:
    """Text for the demo's SentencePiece model: the training split only (given alone or as
    `generate()`'s {split: examples}), plus the task prefixes and every possible answer, so no test
    question shapes the vocabulary."""
    if isinstance(train, Mapping):
        train = train["train"]
    texts = [f"{e.input} {e.rationales[0]} {e.label}" for e in train]
    return texts + ["predict: explain: So the answer is 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18"] * 10
