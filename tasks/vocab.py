"""The SentencePiece vocabulary the tasks tokenize with."""
from __future__ import annotations

import os
from typing import Optional

import gin
import seqio

from dsbs_jax.data.vocab import DEFAULT_EXTRA_IDS, DEFAULT_SPM_PATH

SPM_PATH_ENV = "DSBS_SPM_PATH"


@gin.configurable
def get_vocabulary(spm_path: Optional[str] = None, extra_ids: Optional[int] = None) -> seqio.SentencePieceVocabulary:
    """`spm_path`, else `$DSBS_SPM_PATH`, else T5's public `cc_all.32000` model (on GCS).

    T5's model gets T5's 100 extra ids (T5X's vocabulary of 32100, embedded as 32128); a
    locally trained model gets none unless `extra_ids` says so.
    """
    path = spm_path or os.environ.get(SPM_PATH_ENV) or DEFAULT_SPM_PATH
    if extra_ids is None:
        extra_ids = DEFAULT_EXTRA_IDS if path == DEFAULT_SPM_PATH else 0
    return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)
