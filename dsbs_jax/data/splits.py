"""The reference code's validation hold-out: `datasets.Dataset.train_test_split(test_size, seed)`.

The paper's CQA, SVAMP and ASDiv have no validation split: the reference holds out
`train_test_split(test_size=0.1, seed=0)` of train (run.py). This module reproduces that call
exactly, without the `datasets` package: a `numpy.random.default_rng(seed)` permutation of the
rows, the first `ceil(test_size * n)` of it held out, the next `n - n_test` kept, both in
permutation order (`tests/test_fidelity.py` checks it against `datasets` itself).

    train, valid = holdout(examples, test_size=0.1, seed=0)   # CQA: 8,766 / 975 of 9,741
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, TypeVar

import numpy as np

T = TypeVar("T")
VALIDATION_SPLIT = "valid"


def train_test_indices(num_rows: int, test_size: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of `datasets`' `train_test_split(test_size=..., seed=...)`."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), found {test_size}.")
    num_test = math.ceil(test_size * num_rows)
    num_train = num_rows - num_test
    if num_test < 1 or num_train < 1:
        raise ValueError(f"Cannot hold out {test_size:g} of {num_rows} rows: both parts must be non-empty.")
    permutation = np.random.default_rng(seed).permutation(num_rows)
    return permutation[num_test:num_test + num_train], permutation[:num_test]


def holdout(rows: Sequence[T], test_size: float = 0.1, seed: int = 0) -> Tuple[List[T], List[T]]:
    """(kept, held out) rows, both in the order `datasets` gives them."""
    train, test = train_test_indices(len(rows), test_size, seed)
    return [rows[i] for i in train], [rows[i] for i in test]
