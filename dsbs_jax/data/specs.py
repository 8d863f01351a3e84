"""Per-dataset specs: the few strings and functions in which datasets differ.

A `DatasetSpec` says how to turn one raw record into the model input x and the gold label,
how to parse a teacher's output for it, and how it is scored. Everything else (reading files,
writing TFRecords, prompting the teacher) is shared code that takes a spec.

Inputs follow the reference implementation exactly:
  * cqa:   "{question}\\nAnswer Choices:\\n(a) {c0}\\n(b) {c1}\\n(c) {c2}\\n(d) {c3}\\n(e) {c4}" -> answer text
  * esnli, anli1: premise + "</s>" + hypothesis (T5's EOS token, no spaces) -> entailment/neutral/contradiction
  * svamp: "{Body}\\n{Question}" -> equation string such as "( 84.0 / 2.0 )"
  * asdiv: "{Body}\\n{Question}" -> the number at the start of "Answer"

    spec = get_spec("cqa")
    x = spec.format_input(raw); y = spec.gold_label(raw)
    parsed = spec.parse_teacher(teacher_output, choices=spec.choices(raw))
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

from dsbs_jax.data import parsers
from dsbs_jax.data.errors import FieldError
from dsbs_jax.data.vocab import EOS_TEXT

NLI_LABELS = ("entailment", "neutral", "contradiction")  # gold ids 0, 1, 2
# The reference code joins premise and hypothesis with the T5 tokenizer's EOS token string;
# the tasks encode it as EOS id 1, as that tokenizer does (tasks.registry.encode_text_tf).
EOS_TOKEN = EOS_TEXT
METRICS = ("accuracy", "equation")

Record = Mapping[str, Any]


def require_field(raw: Record, name: str, kind: type = str) -> Any:
    """`raw[name]`, checked to be present and of `kind`; raises `FieldError` otherwise."""
    if not isinstance(raw, Mapping):
        raise FieldError(None, f"expected a JSON object per record, found {type(raw).__name__}")
    if name not in raw or raw[name] is None:
        raise FieldError(name, f"missing; the record has fields {sorted(raw)}",
                         fix="add the field, or map another field onto it (--template/--label_field)")
    value = raw[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise FieldError(name, f"expected a {kind.__name__}, found {type(value).__name__} {value!r:.60}")
    return value


def _no_choices(raw: Record) -> tuple[str, ...]:
    del raw
    return ()


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What is particular to one dataset.

    Attributes:
      name: dataset name; also the output directory name and the SeqIO task prefix.
      format_input: raw record -> model input x (str). Raises `FieldError` on bad records.
      gold_label: raw record -> gold label text, or None for unlabeled data.
      parser: parses one teacher output (see `parsers.TeacherParser`).
      label_set: the allowed labels, or None when free-form or per-example (CQA choices).
      choices: raw record -> its answer choices (CQA), else ().
      metric: "accuracy" (exact string match) or "equation" (numeric value of an equation).
      prompt_file: few-shot prompt basename in `dsbs_jax/rationales/prompts/`.
      stop_sequences: where the teacher should stop generating (the next few-shot example).
      id_field: raw field holding a stable id, if the data has one.
      release_splits: splits present in the paper's data release.
      outputs_per_file: teacher outputs per `llm/{split}_CoT_{i}.json` file in the release.
      validation_holdout: share of train that `dsbs import` holds out as the validation split
        when the data has none (the reference's `train_test_split(test_size=0.1, seed=0)`).
      combines: for a dataset built from others (SVAMP + ASDiv), split -> the source datasets
        whose examples it concatenates, in order.
    """

    name: str
    format_input: Callable[[Record], str]
    gold_label: Callable[[Record], Optional[str]]
    parser: parsers.TeacherParser
    label_set: Optional[tuple[str, ...]] = None
    choices: Callable[[Record], tuple[str, ...]] = _no_choices
    metric: str = "accuracy"
    prompt_file: str = ""
    stop_sequences: tuple[str, ...] = ()
    id_field: Optional[str] = None
    release_splits: tuple[str, ...] = ("train", "test")
    outputs_per_file: int = 1000
    validation_holdout: float = 0.0
    combines: Optional[Mapping[str, tuple[str, ...]]] = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"DatasetSpec {self.name!r}: metric must be one of {METRICS}, found {self.metric!r}")

    @property
    def cut_marker(self) -> str:
        """The marker at which teacher outputs are cut (the start of the run-on example)."""
        return self.parser.cut_markers[0]

    def parse_teacher(self, output: Optional[str], choices: Sequence[str] = ()) -> parsers.ParseResult:
        """Parses one teacher output; never raises (failures are in the result)."""
        return self.parser(output, choices)


# --- CommonsenseQA -----------------------------------------------------------------------------

def _cqa_choices(raw: Record) -> tuple[str, ...]:
    choices = require_field(raw, "choices", list)
    if len(choices) != 5 or not all(isinstance(c, str) for c in choices):
        raise FieldError("choices", f"expected a list of 5 strings, found {choices!r:.120}")
    return tuple(choices)


def _cqa_input(raw: Record) -> str:
    question = require_field(raw, "question")
    c = _cqa_choices(raw)
    return f"{question}\nAnswer Choices:\n(a) {c[0]}\n(b) {c[1]}\n(c) {c[2]}\n(d) {c[3]}\n(e) {c[4]}"


def _cqa_label(raw: Record) -> str:
    answer, choices = require_field(raw, "answer"), _cqa_choices(raw)
    if answer not in choices:
        raise FieldError("answer", f"expected one of the 5 choices {list(choices)}, found {answer!r}",
                         fix="correct the record or drop it")
    return answer


# --- e-SNLI and ANLI ---------------------------------------------------------------------------

def _nli_input(raw: Record) -> str:
    return f"{require_field(raw, 'premise')}{EOS_TOKEN}{require_field(raw, 'hypothesis')}"


def _nli_label(raw: Record) -> str:
    if "label" not in raw or raw["label"] is None:
        raise FieldError("label", f"missing; the record has fields {sorted(raw)}")
    label = raw["label"]
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(NLI_LABELS):
        return NLI_LABELS[label]
    if isinstance(label, str) and label in NLI_LABELS:
        return label
    raise FieldError("label", f"expected 0/1/2 or one of {list(NLI_LABELS)}, found {label!r}",
                     fix="drop records without a gold label (SNLI uses -1 for those)")


# --- SVAMP and ASDiv ---------------------------------------------------------------------------

def _math_input(raw: Record) -> str:
    if "Body" not in raw and "input" in raw:  # the reference code's svamp_{split}.json: already formatted
        return require_field(raw, "input")
    return f"{require_field(raw, 'Body')}\n{require_field(raw, 'Question')}"


def _svamp_label(raw: Record) -> str:
    if "Equation" not in raw and "label" in raw:
        return require_field(raw, "label").strip()
    return require_field(raw, "Equation").strip()


def _asdiv_label(raw: Record) -> str:
    answer = require_field(raw, "Answer").strip()  # e.g. "9 (apples)": the reference keeps the number only
    if not answer:
        raise FieldError("Answer", "expected a number such as '9 (apples)', found ''")
    return answer.split(" ")[0]


_QA_CUT = ("Q:",)
_NLI_CUT = ("Premise",)

_SPECS: dict[str, DatasetSpec] = {}


def register_spec(spec: DatasetSpec, overwrite: bool = False) -> DatasetSpec:
    """Adds a spec (e.g. for user data) so that `get_spec(spec.name)` finds it."""
    if spec.name in _SPECS and not overwrite and _SPECS[spec.name] != spec:
        raise ValueError(f"A dataset spec named {spec.name!r} is already registered; pass overwrite=True "
                         "or choose another --dataset name")
    _SPECS[spec.name] = spec
    return spec


SPEC_FILE = "dataset_spec.json"  # a user dataset's spec, written by `dsbs import --format jsonl|csv`
DATA_ROOT_ENV = "DSBS_DATA_ROOT"


def _spec_file(name: str, data_dir: Optional[str]) -> Optional[str]:
    """`{data_dir}/dataset_spec.json` (a dataset dir) or `{data_dir}/{name}/dataset_spec.json` (a
    data root) when it exists; `$DSBS_DATA_ROOT` is the data root when `data_dir` is None."""
    import os

    roots = [data_dir] if data_dir else []
    if os.environ.get(DATA_ROOT_ENV):
        roots.append(os.environ[DATA_ROOT_ENV])
    if not roots:
        return None
    from dsbs_jax.data import fs  # tf.io.gfile only for gs:// data dirs

    for root in roots:
        for candidate in (f"{root.rstrip('/')}/{SPEC_FILE}", f"{root.rstrip('/')}/{name}/{SPEC_FILE}"):
            if fs.exists(candidate):
                return candidate
    return None


def get_spec(name: str, data_dir: Optional[str] = None) -> DatasetSpec:
    """The spec registered under `name`, else the one `dsbs import` saved for a user dataset.

    Args:
      name: the dataset name (`--dataset`).
      data_dir: the dataset dir or data root to look for `dataset_spec.json` in (`--src`);
        `$DSBS_DATA_ROOT` is tried too.

    Raises:
      KeyError: unknown name; the message lists the known names and where it looked.
    """
    if name in _SPECS:
        return _SPECS[name]
    path = _spec_file(name, data_dir)
    if path is not None:
        from dsbs_jax.data.adapters.user import read_spec_file  # the user-data spec builder

        spec = read_spec_file(path)
        if spec.name != name:
            raise KeyError(f"{path} is the spec of dataset {spec.name!r}, not {name!r}; check --dataset")
        return register_spec(spec, overwrite=True)
    looked = f" (no {SPEC_FILE} in {data_dir})" if data_dir else ""
    raise KeyError(f"Unknown dataset {name!r}{looked}; known datasets: {sorted(_SPECS)}. For your own data run "
                   "`dsbs import --format jsonl|csv --dataset NAME ...` and pass its dataset dir as --src.")


def known_specs() -> tuple[str, ...]:
    return tuple(sorted(_SPECS))


register_spec(DatasetSpec(
    name="cqa", format_input=_cqa_input, gold_label=_cqa_label, choices=_cqa_choices,
    parser=parsers.TeacherParser(_QA_CUT, "So the answer is", "choice", fallback_markers=("the answer is",)),
    prompt_file="cqa.txt", stop_sequences=("\n\nQ:",), id_field="id", validation_holdout=0.1))


def _nli_spec(name: str, answer_marker: str, id_field: Optional[str], outputs_per_file: int) -> DatasetSpec:
    return DatasetSpec(
        name=name, format_input=_nli_input, gold_label=_nli_label, label_set=NLI_LABELS,
        parser=parsers.TeacherParser(_NLI_CUT, answer_marker, "label", NLI_LABELS, fallback_markers=("the answer is",)),
        prompt_file=f"{name}.txt", stop_sequences=("\n\nPremise",), id_field=id_field,
        release_splits=("valid", "test"), outputs_per_file=outputs_per_file)


# e-SNLI's prompt ends the rationale with "\nAnswer: label", ANLI's with "So the answer is label.".
register_spec(_nli_spec("esnli", "Answer:", id_field=None, outputs_per_file=5500))
# The release's ANLI-r1 llm files hold 5,000 outputs each (the reference's batch_size = 5000).
register_spec(_nli_spec("anli1", "So the answer is", id_field="uid", outputs_per_file=5000))
register_spec(DatasetSpec(
    name="svamp", format_input=_math_input, gold_label=_svamp_label, metric="equation",
    parser=parsers.TeacherParser(_QA_CUT, "The answer is", "equation"),
    # SVAMP.json has "ID", the reference code's svamp_{split}.json has no id: lines are numbered.
    prompt_file="svamp.txt", stop_sequences=("\n\nQ:",), outputs_per_file=500, validation_holdout=0.1))
register_spec(DatasetSpec(
    name="asdiv", format_input=_math_input, gold_label=_asdiv_label, metric="equation",
    parser=parsers.TeacherParser(_QA_CUT, "The answer is", "equation"),
    prompt_file="asdiv.txt", stop_sequences=("\n\nQ:",), validation_holdout=0.1))
# The paper's SVAMP experiment with ASDiv as extra training data (reference: run.py --dataset asdiv):
# train = SVAMP train + ASDiv train (then 10 % held out), test = SVAMP test.
register_spec(dataclasses.replace(
    get_spec("svamp"), name="svamp_asdiv", combines={"train": ("svamp", "asdiv"), "test": ("svamp",)}))
