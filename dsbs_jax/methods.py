"""The paper's methods, defined once: what each trains on, its loss, and how it is evaluated.

    from dsbs_jax import methods
    m = methods.get("dsbs")
    m.train_task("cqa", 25)        # 'cqa_paired_gold_frac25'
    m.eval_task("cqa")             # 'cqa_label_gold'
    m.loss                         # LossConfig(mode='paired', alpha=0.5, z_loss=0.0, ...)
    m.decode_length({"inputs": 512, "targets": 256})   # 64

Everything else derives from this table and keeps no copy of it: the SeqIO task family
(`tasks/registry.py` registers every task a method names), the embedded trainer (loss, feature
converter, evaluation task, decode length), `dsbs predict` (input prefix and postprocessing, from
the method recorded in `dsbs_run.json`), `dsbs sweep` and both gin trees (`dsbs_jax/gin_gen.py`).

SeqIO names follow `{dataset}_{variant}_{labels}[_frac{f}]` (`variant` below, `labels` in
{gold, llm}); `resolve()` is the one parser of that grammar. A method is one `Method` entry: to add
one, append it to `_METHODS` (docs/architecture.md has a worked example).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping, Optional, Tuple

from dsbs_jax.train.losses import LossConfig

PREDICT_PREFIX = "predict: "
EXPLAIN_PREFIX = "explain: "
# The single-task target is "{rationale}{SINGLE_SEPARATOR}{label}".
SINGLE_SEPARATOR = " So the answer is "
LABEL_SOURCES = ("gold", "llm")
FULL = 100.0
# Greedy decoding length of label tasks (the reference's `gen_max_len`).
LABEL_DECODE_LENGTH = 64

# SeqIO task variants: variant -> (inputs, targets) it builds from an example, and whether the
# example needs a rationale. "paired" carries both pairs; "dsbs" is a mixture of label + rationale.
TASK_VARIANTS = ("label", "rationale", "standard", "single", "paired")
MIXTURE_VARIANTS = ("dsbs",)
VARIANT_INPUT_PREFIX: Mapping[str, str] = {
    "label": PREDICT_PREFIX, "paired": PREDICT_PREFIX, "dsbs": PREDICT_PREFIX, "rationale": EXPLAIN_PREFIX,
    "standard": "", "single": ""}


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the paper.

    Attributes:
      name: the method's name (`--methods`, `METHOD`, `dsbs_run.json`).
      summary: one line for tables, logs and gin headers.
      train_variant: the SeqIO variant it trains on (a task of TASK_VARIANTS or a mixture).
      label_source: "gold" (human labels) or "llm" (the teacher's labels) for training targets;
        evaluation always scores gold labels.
      eval_variant: the gold-label task variant that scores it ("label": `predict: ` x -> label;
        "standard": x -> label; "single": x -> rationale + separator + label, scored on the label).
      loss: the loss (mode, alpha, normalization, z-loss).
      mixture_rate: label-task sampling rate of a mixture method (None otherwise).
      needs_rationales: trains on rationales (the data must have them).
      paper: where the paper or the reference code defines it.
      label: a short name for tables and plot legends.
    """

    name: str
    summary: str
    train_variant: str
    label_source: str
    eval_variant: str
    loss: LossConfig
    mixture_rate: Optional[float] = None
    needs_rationales: bool = False
    paper: str = ""
    label: str = ""

    def __post_init__(self):
        if self.train_variant not in TASK_VARIANTS + MIXTURE_VARIANTS:
            raise ValueError(f"Method {self.name!r}: train_variant {self.train_variant!r} is not one of "
                             f"{TASK_VARIANTS + MIXTURE_VARIANTS}.")
        if self.eval_variant not in ("label", "standard", "single"):
            raise ValueError(f"Method {self.name!r}: eval_variant {self.eval_variant!r} is not a label variant.")
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"Method {self.name!r}: label_source must be one of {LABEL_SOURCES}.")
        if (self.train_variant == "paired") != (self.loss.mode == "paired"):
            raise ValueError(f"Method {self.name!r}: the paired task and the paired loss go together.")
        if (self.train_variant in MIXTURE_VARIANTS) != (self.mixture_rate is not None):
            raise ValueError(f"Method {self.name!r}: a mixture method needs mixture_rate, others none.")

    @property
    def paired(self) -> bool:
        """Both targets of every example in every step (the paired feature converter)."""
        return self.loss.mode == "paired"

    @property
    def is_mixture(self) -> bool:
        return self.train_variant in MIXTURE_VARIANTS

    @property
    def input_prefix(self) -> str:
        """What `dsbs predict` and evaluation put before x."""
        return VARIANT_INPUT_PREFIX[self.eval_variant]

    @property
    def postprocessor(self) -> str:
        """"single" keeps the text after the last separator; "strip" the whole output."""
        return "single" if self.eval_variant == "single" else "strip"

    def train_task(self, dataset: str, fraction: float = FULL) -> str:
        """The SeqIO task or mixture this method trains on."""
        return task_name(dataset, self.train_variant, self.label_source, fraction)

    def eval_task(self, dataset: str) -> str:
        """The gold-label task that scores this method (validation/test splits)."""
        return task_name(dataset, self.eval_variant, "gold")

    def component_tasks(self, dataset: str, fraction: float = FULL) -> Tuple[str, ...]:
        """The SeqIO tasks behind `train_task` (a mixture's parts, else the task itself)."""
        if not self.is_mixture:
            return (self.train_task(dataset, fraction),)
        return (task_name(dataset, "label", self.label_source, fraction), task_name(dataset, "rationale", None, fraction))

    def decode_length(self, task_feature_lengths: Optional[Mapping[str, int]] = None) -> int:
        """Greedy decoding length: 64 for labels, the target length when the label follows a rationale."""
        if self.eval_variant == "single" and task_feature_lengths and "targets" in task_feature_lengths:
            return int(task_feature_lengths["targets"])
        return LABEL_DECODE_LENGTH


# Every term of the reference's losses is a mean token cross-entropy over its own targets (Hugging
# Face's T5 loss), with no z-loss: NUM_REAL_TARGET_TOKENS and z_loss=0 reproduce it exactly.
_MEAN_TOKEN_CE = LossConfig(mode="target", loss_normalizing_factor="NUM_REAL_TARGET_TOKENS", z_loss=0.0)

_PAIRED = LossConfig(mode="paired", alpha=0.5, z_loss=0.0)

_METHODS = (
    Method("standard", "standard finetuning: x -> gold label", train_variant="standard", label_source="gold",
           eval_variant="standard", loss=_MEAN_TOKEN_CE, label="Standard finetuning (gold)",
           paper="Sec. 4, 'standard finetuning' (reference: --model_type standard --label_type gt)"),
    Method("distill", "task distillation: x -> teacher label", train_variant="standard", label_source="llm",
           eval_variant="standard", loss=_MEAN_TOKEN_CE, label="Task distillation (teacher labels)",
           paper="Sec. 4, 'standard task distillation' (--model_type standard --label_type llm)"),
    Method("dsbs", "Distilling step-by-step: 0.5 L(predict: x -> gold label) + 0.5 L(explain: x -> rationale)",
           train_variant="paired", label_source="gold", eval_variant="label", loss=_PAIRED, needs_rationales=True,
           label="Distilling step-by-step (gold labels)",
           paper="Eq. (3), alpha=0.5 (reference: TaskPrefixTrainer, --label_type gt --llm palm)"),
    Method("dsbs_llm", "Distilling step-by-step with teacher labels", train_variant="paired", label_source="llm",
           eval_variant="label", loss=_PAIRED, needs_rationales=True,
           label="Distilling step-by-step (teacher labels)",
           paper="Eq. (3), alpha=0.5 (reference: --label_type llm --llm palm)"),
    Method("dsbs_mixture", "Distilling step-by-step as a SeqIO mixture (rate 0.5, per-sequence loss)",
           train_variant="dsbs", label_source="gold", eval_variant="label",
           loss=LossConfig(mode="target", loss_normalizing_factor="AVERAGE_PER_SEQUENCE", z_loss=0.0),
           mixture_rate=0.5, needs_rationales=True, label="DSbS as a SeqIO mixture (gold)",
           paper="not in the paper: T5X's sampling alternative; alpha ~ the rate in expectation"),
    Method("single", "single-task: x -> rationale + ' So the answer is ' + gold label", train_variant="single",
           label_source="gold", eval_variant="single", loss=_MEAN_TOKEN_CE, needs_rationales=True,
           label="Single-task: rationale + label (gold)", paper="Sec. 5.2, 'single-task training' ablation"),
)
METHODS: Mapping[str, Method] = {m.name: m for m in _METHODS}
DEFAULT_METHODS = tuple(METHODS)


def get(name: str) -> Method:
    """The method called `name`; the error lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; choose from {list(METHODS)}.") from None


def fraction_suffix(fraction: float) -> str:
    """'' for 100 %, else `_frac{f}` (e.g. `_frac12.5`)."""
    fraction = float(fraction)
    if not 0 < fraction <= FULL or math.isnan(fraction):
        raise ValueError(f"Data fraction must be in (0, 100] percent, found {fraction:g}.")
    return "" if fraction >= FULL else f"_frac{fraction:g}"


def task_name(dataset: str, variant: str, labels: Optional[str] = None, fraction: float = FULL) -> str:
    """E.g. `task_name('cqa', 'paired', 'llm', 25)` -> `cqa_paired_llm_frac25`."""
    parts = [dataset, variant] + ([labels] if labels and variant != "rationale" else [])
    return "_".join(parts) + fraction_suffix(fraction)


_NAME = re.compile(r"^(?P<dataset>.+?)_(?P<variant>" + "|".join(TASK_VARIANTS + MIXTURE_VARIANTS) +
                   r")(?:_(?P<labels>gold|llm))?(?:_frac(?P<fraction>[0-9.]+))?$")


@dataclasses.dataclass(frozen=True)
class TaskRef:
    """A SeqIO name of the task family, taken apart."""

    dataset: str
    variant: str
    labels: Optional[str]
    fraction: float


def parse_task_name(name: str) -> Optional[TaskRef]:
    """`cqa_paired_llm_frac25` -> TaskRef('cqa', 'paired', 'llm', 25.0); None if not of the family."""
    match = _NAME.match(name)
    if not match or (match["variant"] == "rationale") == bool(match["labels"]):
        return None
    return TaskRef(match["dataset"], match["variant"], match["labels"], float(match["fraction"] or FULL))


def method_for_task(name: str) -> Optional[Method]:
    """The method that trains on SeqIO task/mixture `name`, or None."""
    ref = parse_task_name(name)
    if ref is None:
        return None
    for method in _METHODS:
        if (method.train_variant, method.label_source) == (ref.variant, ref.labels):
            return method
    return None


def resolve(method: Optional[str], dataset: Optional[str], fraction: float = FULL,
            mixture_or_task_name: Optional[str] = None) -> Tuple[Method, str, Optional[str]]:
    """(method, training task, dataset) from what a user set: a method and dataset, or a task name.

    With a task name of the family and no method, the method is the one that trains on it. With
    both, they must agree. A task outside the family needs an explicit method.
    """
    if method is None and mixture_or_task_name is None:
        raise ValueError("Set a method and a dataset (gin: METHOD, DATASET) or a task "
                         "(gin: MIXTURE_OR_TASK_NAME).")
    if mixture_or_task_name is None:
        if not dataset:
            raise ValueError(f"METHOD={method!r} needs a dataset (gin: DATASET, e.g. 'cqa').")
        chosen = get(method)
        return chosen, chosen.train_task(dataset, fraction), dataset
    ref = parse_task_name(mixture_or_task_name)
    implied = method_for_task(mixture_or_task_name)
    if method is None:
        if implied is None:
            raise ValueError(f"MIXTURE_OR_TASK_NAME={mixture_or_task_name!r} is not of the "
                             "`{dataset}_{variant}_{labels}` family, so its method is unknown: set METHOD "
                             f"to one of {list(METHODS)} (gin: METHOD).")
        return implied, mixture_or_task_name, ref.dataset
    chosen = get(method)
    if implied is not None and implied.name != chosen.name:
        raise ValueError(f"MIXTURE_OR_TASK_NAME={mixture_or_task_name!r} is the training task of method "
                         f"{implied.name!r}, not of METHOD={method!r}; drop one of the two.")
    return chosen, mixture_or_task_name, (ref.dataset if ref else dataset)
