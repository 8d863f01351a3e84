"""Few-shot chain-of-thought prompts: editable text files with `{placeholders}`.

A prompt file ends with the example to answer. Placeholders: `{input}` (the formatted input x),
and for NLI inputs (`premise</s>hypothesis`) also `{premise}` and `{hypothesis}`. Literal braces
are written `{{` and `}}`. Users pass their own file with `--prompt_file`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import string
from typing import Optional

from dsbs_jax.data import schema
from dsbs_jax.data.specs import DatasetSpec

PROMPT_DIR = os.path.join(os.path.dirname(__file__), "prompts")
NLI_SEPARATOR = "</s>"
PLACEHOLDERS = ("input", "premise", "hypothesis")


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    text: str
    path: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, example: schema.Example) -> str:
        premise, _, hypothesis = example.input.partition(NLI_SEPARATOR)
        return self.text.format(input=example.input, premise=premise, hypothesis=hypothesis)


def load_prompt(spec: DatasetSpec, prompt_file: Optional[str] = None) -> PromptTemplate:
    """The user's `prompt_file`, else the dataset's bundled prompt; placeholders are checked."""
    path = prompt_file or (os.path.join(PROMPT_DIR, spec.prompt_file) if spec.prompt_file else None)
    if not path:
        raise ValueError(f"Dataset {spec.name!r} has no bundled few-shot prompt; pass --prompt_file "
                         f"(a text file ending with the question, using {{input}}).")
    from dsbs_jax.data import fs  # gs:// prompt files too

    if not fs.exists(path):
        raise FileNotFoundError(f"Prompt file {path} does not exist (--prompt_file).")
    with fs.GFile(path) as f:
        text = f.read()
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as error:
        raise ValueError(f"{path}: malformed placeholder ({error}); write literal braces as {{{{ and }}}}.") from None
    unknown = names - set(PLACEHOLDERS)
    if unknown or not names:
        raise ValueError(f"{path}: placeholders must be among {{{', '.join(PLACEHOLDERS)}}}, found "
                         f"{sorted(names) or 'none'}.")
    return PromptTemplate(text.rstrip() + ("\n" if text.endswith("\n") else ""), path)


def format_answer(spec: DatasetSpec, rationale: str, label: str, choices=()) -> str:
    """A teacher-style answer in the format `spec`'s parser reads (used by the annotations teacher)."""
    parser = spec.parser
    rationale = rationale.strip()
    if parser.kind == "choice" and label in choices:
        return f"{rationale} {parser.answer_marker} ({'abcdefghij'[list(choices).index(label)]}) {label}."
    if parser.kind == "equation":
        equation = label if label.strip().startswith("(") else f"({label})"
        return f"{rationale} {parser.answer_marker} {equation}."
    if parser.answer_marker.endswith(":"):
        return f"{rationale}\n{parser.answer_marker} {label}"
    return f"{rationale} {parser.answer_marker} {label}."
