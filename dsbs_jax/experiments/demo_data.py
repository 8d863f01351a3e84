"""The demo's own dataset: two-step arithmetic word problems with human-style rationales.

    "Mia has 7 apples. She buys 5 more and then gives away 3. How many apples does Mia have now?"
    label "9", rationale "Mia starts with 7 apples. 7 + 5 = 12. 12 - 3 = 9."

Generated from a seed, so no third-party data ships with the package. The answer needs two
steps; the rationale spells out the intermediate sum, which is what Distilling step-by-step
hopes a student learns from.
"""
from __future__ import annotations

import random
from typing import Dict, List

from dsbs_jax.data import parsers, schema, specs

DATASET = "demo_math"
NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben")
ITEMS = ("apples", "pens", "cards", "stamps", "shells", "coins", "books", "marbles")
GAIN = ("buys {b} more", "finds {b} more", "gets {b} more from a friend")
LOSS = ("gives away {c}", "loses {c}", "eats {c}" )


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
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    c = rng.randint(1, a + b - 1)
    total, answer = a + b, a + b - c
    gain, loss = rng.choice(GAIN).format(b=b), rng.choice(LOSS).format(c=c)
    question = f"{name} has {a} {item}. {name} {gain} and then {loss}. How many {item} does {name} have now?"
    rationale = f"{name} starts with {a} {item}. {a} + {b} = {total}. {total} - {c} = {answer}."
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


def vocabulary_texts(examples: Dict[str, List[schema.Example]]) -> List[str]:
    texts = [f"{e.input} {e.rationales[0]} {e.label}" for split in examples.values() for e in split]
    return texts + ["predict: explain: So the answer is 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18"] * 10
