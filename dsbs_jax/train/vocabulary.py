"""The vocabulary a run trains with, said out loud, and a model embedding that fits it.

    choice = describe(task_vocabulary)           # reads the SentencePiece file: fails before any work
    model = fit_model(model, choice, pretrained=INITIAL_CHECKPOINT_PATH, recorded=recorded_vocab_size)

T5X pads T5's 32,100 ids (32,000 pieces + 100 extra ids) to 32,128 embedding rows. A model much
wider than its vocabulary has rows no target ever trains, yet greedy decoding can pick them: a
student trained on a dataset's own 84-piece vocabulary inside T5's 32,128 rows predicted `⁇ ⁇ ⁇`.
So a from-scratch run gets the vocabulary padded the same way; a pretrained run cannot change its
embedding and is refused, since its checkpoint only means something with its own vocabulary.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from dsbs_jax.gin_utils import GinConfigError
from dsbs_jax.models.config import T5Config

PAD_MULTIPLE = 128  # T5X's rounding of the embedding (32,100 ids -> 32,128 rows)


class VocabularyMismatchError(GinConfigError):
    """The model's VOCAB_SIZE cannot hold, or does not belong to, the tasks' vocabulary."""


@dataclasses.dataclass(frozen=True)
class VocabularyChoice:
    """Which SentencePiece model the tasks tokenize with, and why (recorded in `dsbs_run.json`)."""

    path: Optional[str]
    pieces: int
    extra_ids: int
    origin: str

    @property
    def ids(self) -> int:
        return self.pieces + self.extra_ids

    def describe(self) -> str:
        return (f"{self.path}, {self.pieces} pieces + {self.extra_ids} extra ids"
                + (f" ({self.origin})" if self.origin else ""))


def padded_size(ids: int) -> int:
    """Embedding rows for `ids` ids, rounded up as T5X does (32,100 -> 32,128)."""
    return -(-ids // PAD_MULTIPLE) * PAD_MULTIPLE


def describe(vocabulary: Any) -> VocabularyChoice:
    """The choice behind a task's vocabulary; reading its size reads the file (a one-line error if absent)."""
    extra_ids = int(getattr(vocabulary, "extra_ids", 0) or 0)
    path = getattr(vocabulary, "sentencepiece_model_file", None)
    if path and "://" not in path:
        path = os.path.abspath(path)
    return VocabularyChoice(path=path, pieces=int(vocabulary.vocab_size) - extra_ids, extra_ids=extra_ids,
                            origin=getattr(vocabulary, "origin", ""))


def fit_model(model: T5Config, choice: VocabularyChoice, *, pretrained: Optional[str],
              recorded_vocab_size: Optional[int] = None) -> T5Config:
    """`model` with a `vocab_size` that holds `choice`: unchanged, narrowed (from scratch) or refused.

    Args:
      pretrained: INITIAL_CHECKPOINT_PATH, whose embedding (and vocabulary) is fixed.
      recorded_vocab_size: the size a run being resumed was trained with; a run recorded at the
        unfitted size (before this rule existed) keeps it, since its checkpoint has that shape.
    Raises:
      VocabularyMismatchError: the model is too small for the vocabulary, or a pretrained model is
        much wider than it (another vocabulary).
    """
    fitted = padded_size(choice.ids)
    if model.vocab_size < choice.ids:
        raise VocabularyMismatchError(
            f"The tasks' vocabulary has {choice.ids} ids ({choice.describe()}) but the model's vocab_size is "
            f"{model.vocab_size}; set --gin.VOCAB_SIZE={fitted}.")
    if model.vocab_size <= fitted or recorded_vocab_size == model.vocab_size:
        return model
    if pretrained:
        raise VocabularyMismatchError(
            f"INITIAL_CHECKPOINT_PATH={pretrained} has {model.vocab_size} embedding rows (VOCAB_SIZE) but the tasks' "
            f"vocabulary has {choice.ids} ids ({choice.describe()}): a pretrained model only works with the "
            "vocabulary it was trained with. For T5, import without --train_vocab and leave DSBS_SPM_PATH unset "
            "(T5's vocabulary) or point DSBS_SPM_PATH at the checkpoint's spiece.model; or train from scratch "
            "(no --gin.INITIAL_CHECKPOINT_PATH).")
    return model.replace(vocab_size=fitted)
