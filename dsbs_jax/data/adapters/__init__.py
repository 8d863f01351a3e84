"""Adapters: sources of `schema.Example`s (the paper's release, TFDS, user JSONL/CSV).

    from dsbs_jax.data import adapters
    examples = adapters.read_release(release_dir, "cqa", "test")
    examples = adapters.read_tfds("esnli", "valid", data_dir="~/tensorflow_datasets")
    examples = adapters.read_user("my.csv", "mine", "train", adapters.FieldMapping(template="{q}", label_field="a"))

`attach_teacher_output` is how the rationale job turns a teacher's text into the fields of an
Example, with the same parser and bookkeeping the release adapter uses.
"""
from dsbs_jax.data.adapters.base import attach_teacher_output, example_from_raw
from dsbs_jax.data.adapters.release import read_release, release_files
from dsbs_jax.data.adapters.tfds import read_tfds
from dsbs_jax.data.adapters.user import FieldMapping, read_user, user_spec

__all__ = [
    "attach_teacher_output", "example_from_raw", "read_release", "release_files", "read_tfds",
    "FieldMapping", "read_user", "user_spec",
]
