"""Parsing few-shot chain-of-thought teacher outputs into (rationale, label).

Real PaLM outputs run on past the answer into an invented next few-shot example, so every
parser first cuts the output at the dataset's cut marker (`Q:` for CQA/SVAMP, `Premise` for
NLI), then splits at the answer phrase (`So the answer is`, `Answer:`, `The answer is`).
Parsers are data, not code per dataset: a `TeacherParser` holds the markers and the kind of
answer it extracts (`choice`, `label` or `equation`), and `specs.py` builds one per dataset.

A parser never raises on model output: failures come back as a `ParseResult` with
`label=None` and a `failure_reason` from `FAILURE_REASONS`.

Two labels come out of every parse:
  * `label`: the answer mapped onto the label set (CQA: the choice text, matched
    case-insensitively or through its letter; NLI: one of the three labels), or None.
  * `raw_label`: the answer text the reference implementation extracts with its own rules
    (text after the first `(x)` for CQA, the text after the marker otherwise), or None where
    the reference code would produce an empty label. Training on `raw_label` unfiltered is
    what the paper did; the adapters keep it when `label` is None unless filtering is asked for.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Optional, Sequence

# Why a parse failed; these are the keys of the manifest's `parse_failures`.
EMPTY_OUTPUT = "empty_output"          # the teacher returned nothing (or only whitespace)
NO_ANSWER = "no_answer"                # no answer phrase before the cut marker
EMPTY_LABEL = "empty_label"            # answer phrase present, nothing after it
AMBIGUOUS_ANSWER = "ambiguous_answer"  # several different choices named ("(b) x or (d) y")
LABEL_NOT_IN_SET = "label_not_in_set"  # an answer that is none of the labels / choices
BAD_EQUATION = "bad_equation"          # SVAMP/ASDiv answer that is not an arithmetic expression
# Notes on successful parses (manifest `parse_notes`).
FALLBACK_MARKER = "fallback_marker"  # answer found by a fallback phrase, e.g. "..., so the answer is x."
FAILURE_REASONS = (EMPTY_OUTPUT, NO_ANSWER, EMPTY_LABEL, AMBIGUOUS_ANSWER, LABEL_NOT_IN_SET, BAD_EQUATION)
NOTES = (AMBIGUOUS_ANSWER, FALLBACK_MARKER)

KINDS = ("choice", "label", "equation", "free")

_LETTER = re.compile(r"\(([A-Za-z])\)")
_BARE_LETTER = re.compile(r"^\(?([A-Za-z])\)?\.?$")
_EQUATION_CHARS = re.compile(r"^[\d\s\.\+\-\*/\(\)]+$")
# "(b) x, (c) y, or (d) z": the words that glue a list of choices together.
_LIST_GLUE = re.compile(r"(?:,|\s+or|\s+and|\s+either)+$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclasses.dataclass(frozen=True)
class ParseResult:
    """One parsed teacher output.

    Attributes:
      label: the answer in the label set (CQA: the exact choice text), or None on failure.
      rationale: the reasoning before the answer phrase, run-on text cut off and stripped.
        On failure, whatever text came before the cut marker.
      failure_reason: None when `label` is set, else one of `FAILURE_REASONS`.
      raw_label: the answer as the reference implementation's rule extracts it (possibly
        outside the label set, e.g. `'country club or'`); None when it would be empty.
      notes: parsed, but worth counting: AMBIGUOUS_ANSWER (several choices named, the first
        kept, as the reference code does), FALLBACK_MARKER (found by a fallback phrase such
        as ", so the answer is x" or "The answer is x", which the reference rule misses).
    """

    label: Optional[str]
    rationale: str
    failure_reason: Optional[str] = None
    raw_label: Optional[str] = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.label is not None


def _normalize(text: str) -> str:
    """Case- and space-insensitive comparison key; trailing period dropped."""
    text = " ".join(text.split()).casefold()
    return text[:-1].rstrip() if text.endswith(".") else text


def _similar(text: str, choice: str) -> bool:
    """Whether `text` plausibly names `choice` (plural, typo, article); guards letter matches
    against outputs that name a choice the question does not have ("(a) clinic" for "istanbul")."""
    a, b = _normalize(text), _normalize(choice)
    return not a or a in b or b in a or difflib.SequenceMatcher(None, a, b).ratio() >= 0.75


def _strip_period(text: str) -> str:
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


@dataclasses.dataclass(frozen=True)
class TeacherParser:
    """Cut-then-split parser for one output format.

    Attributes:
      cut_markers: the output is cut at the earliest of these (the invented next example).
      answer_marker: the phrase that introduces the answer, e.g. "So the answer is".
      fallback_markers: tried (case-insensitively, after the answer marker itself) when the
        exact answer marker is absent, e.g. "the answer is".
      kind: "choice" (answer names one of the example's choices, maybe by letter),
        "label" (one of `label_set`), "equation" (an arithmetic expression), "free" (any text).
      label_set: the allowed labels for kind "label".
      on_ambiguous: for kind "choice", what to do when several different choices are named:
        "first" keeps the first (what the reference code trains on, noted as
        AMBIGUOUS_ANSWER), "fail" makes it a parse failure.
    """

    cut_markers: tuple[str, ...]
    answer_marker: str
    kind: str
    label_set: Optional[tuple[str, ...]] = None
    on_ambiguous: str = "first"
    fallback_markers: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"TeacherParser kind must be one of {KINDS}, found {self.kind!r}")
        if self.kind == "label" and not self.label_set:
            raise ValueError("TeacherParser(kind='label') needs a label_set")
        if self.on_ambiguous not in ("first", "fail"):
            raise ValueError(f"TeacherParser on_ambiguous must be 'first' or 'fail', found {self.on_ambiguous!r}")

    def cut(self, output: str) -> str:
        """The output up to the first cut marker (the teacher's run-on few-shot text removed)."""
        end = len(output)
        for marker in self.cut_markers:
            index = output.find(marker, 1)  # a marker opening the output cannot be run-on text
            if index != -1:
                end = min(end, index)
        return output[:end]

    def __call__(self, output: Optional[str], choices: Sequence[str] = ()) -> ParseResult:
        """Parses one teacher output; `choices` are the example's answer choices (CQA)."""
        if output is None or not str(output).strip():
            return ParseResult(None, "", EMPTY_OUTPUT)
        text = self.cut(str(output)).rstrip()
        notes = []
        index, end = text.find(self.answer_marker), -1
        if index != -1:
            end = index + len(self.answer_marker)
        else:
            # PaLM sometimes writes "..., so the answer is x." or "The answer is x.".
            for marker in (self.answer_marker,) + self.fallback_markers:
                match = re.search(re.escape(marker), text, flags=re.IGNORECASE)
                if match:
                    index, end = match.start(), match.end()
                    notes.append(FALLBACK_MARKER)
                    break
            else:
                return ParseResult(None, text.strip(), NO_ANSWER)
        rationale = text[:index].strip()
        if notes and rationale and not rationale.endswith("."):
            rationale = rationale.rstrip(",;") + "."  # "x, so the answer is" -> "x."
        # The answer is the first line after the marker; anything after it is run-on text.
        answer = text[end:].strip()
        answer = answer.split("\n", 1)[0].strip()
        if not answer or answer == ".":
            return ParseResult(None, rationale, EMPTY_LABEL, notes=tuple(notes))
        extract = {"choice": self._choice, "label": self._label, "equation": self._equation,
                   "free": self._free}[self.kind]
        label, reason, raw, extra = extract(answer, tuple(choices))
        # The reference rule knows only the exact marker.
        raw = None if notes else raw
        return ParseResult(label, rationale, reason, raw, tuple(notes) + extra)

    # Each extractor returns (label or None, failure reason or None, raw_label or None, notes).

    def _choice(self, answer: str, choices: tuple[str, ...]):
        pieces = _LETTER.split(answer)  # [before, letter1, text1, letter2, text2, ...]
        letters = [letter.lower() for letter in pieces[1::2]]
        # The reference rule: the text between the first "(x)" and the next one.
        raw = _strip_period(pieces[2]) if len(pieces) > 2 else None
        raw = raw or None
        by_text = {_normalize(choice): choice for choice in choices}

        def by_letter(letter: str) -> Optional[str]:
            position = ord(letter) - ord("a")
            return choices[position] if 0 <= position < len(choices) else None

        if not letters:
            bare = _BARE_LETTER.match(answer)
            if bare and by_letter(bare.group(1).lower()) is not None:
                return by_letter(bare.group(1).lower()), None, None, ()
            if _normalize(answer) in by_text:
                return by_text[_normalize(answer)], None, None, ()
            if not choices:
                return _strip_period(answer), None, None, ()
            return None, LABEL_NOT_IN_SET, None, ()
        named = []
        for letter, text in zip(letters, pieces[2::2]):
            text = _strip_period(_LIST_GLUE.sub("", text.strip()))
            choice = by_text.get(_normalize(text))
            if choice is None and by_letter(letter) is not None and _similar(text, by_letter(letter)):
                choice = by_letter(letter)  # "(d) field" for the misspelt choice "feild"
            named.append(choice or text)
        extra = ()
        if len(set(named)) > 1:
            if self.on_ambiguous == "fail":
                return None, AMBIGUOUS_ANSWER, raw, ()
            extra = (AMBIGUOUS_ANSWER,)
        if not choices:
            return (named[0] or None), (None if named[0] else EMPTY_LABEL), raw, extra
        if named[0] in choices:
            return named[0], None, raw, extra
        return None, LABEL_NOT_IN_SET, raw, extra

    def _label(self, answer: str, choices: tuple[str, ...]):
        del choices
        raw = _strip_period(answer) or None
        key = _normalize(answer)
        for label in self.label_set:
            if key == _normalize(label):
                return label, None, raw, ()
        return None, LABEL_NOT_IN_SET, raw, ()

    def _equation(self, answer: str, choices: tuple[str, ...]):
        del choices
        match = re.search(r"\(.*\)", answer)  # greedy: the outermost parenthesised expression
        if match:
            equation = match.group(0)
        else:
            number = _NUMBER.search(answer)
            if not number:
                return None, BAD_EQUATION, None, ()
            equation = number.group(0).replace(",", "")
        if not _EQUATION_CHARS.match(equation):
            return None, BAD_EQUATION, equation, ()
        return equation, None, equation, ()

    def _free(self, answer: str, choices: tuple[str, ...]):
        del choices
        label = _strip_period(answer)
        return (label, None, label, ()) if label else (None, EMPTY_LABEL, None, ())
