"""Teacher-output parsers: hand-written edge cases, then every file of the real PaLM release."""
import json

import pytest

from dsbs_jax.data import parsers
from dsbs_jax.data.specs import NLI_LABELS, get_spec, known_specs

CHOICES = ("british columbia", "body of water", "wooded area", "pay debts", "feild")
CQA = get_spec("cqa")


@pytest.mark.parametrize("answer, expected", [
    ("(c) wooded area.", "wooded area"),
    ("(c).", "wooded area"),                    # letter only
    ("c.", "wooded area"),                      # bare letter
    ("wooded area.", "wooded area"),            # choice text only
    ("Wooded  Area", "wooded area"),            # case and spacing
    ("(C) wooded areas.", "wooded area"),       # capital letter, plural
    ("(e) field.", "feild"),                    # misspelt choice, matched through its letter
    ("either (c) wooded area or (b) body of water.", "wooded area"),  # first of several, noted
])
def test_cqa_answer_forms_map_to_choice_text(answer, expected):
    output = f"Beavers build dams in woods. So the answer is {answer}\n\nQ: Where is a pen?\nAnswer Choices:\n(a) x"
    result = CQA.parse_teacher(output, choices=CHOICES)
    assert result.ok and result.failure_reason is None
    assert result.label == expected
    assert result.rationale == "Beavers build dams in woods."


def test_cqa_ambiguous_answer_is_noted_or_failed_on_request():
    output = "Both work. So the answer is (b) body of water or (c) wooded area."
    kept = CQA.parse_teacher(output, choices=CHOICES)
    assert kept.label == "body of water" and kept.notes == (parsers.AMBIGUOUS_ANSWER,)
    assert kept.raw_label == "body of water or"  # what the reference rule trains on
    strict = parsers.TeacherParser(("Q:",), "So the answer is", "choice", on_ambiguous="fail")
    failed = strict(output, choices=CHOICES)
    assert failed.label is None and failed.failure_reason == parsers.AMBIGUOUS_ANSWER


@pytest.mark.parametrize("output, reason, rationale", [
    ("", parsers.EMPTY_OUTPUT, ""),
    ("   \n ", parsers.EMPTY_OUTPUT, ""),
    (None, parsers.EMPTY_OUTPUT, ""),
    ("Beavers live in woods.\n\nQ: So the answer is (a) x.", parsers.NO_ANSWER, "Beavers live in woods."),
    ("Beavers live in woods. So the answer is", parsers.EMPTY_LABEL, "Beavers live in woods."),
    ("Only these. So the answer is one of these four.", parsers.LABEL_NOT_IN_SET, "Only these."),
    ("A clinic helps. So the answer is (a) clinic.", parsers.LABEL_NOT_IN_SET, "A clinic helps."),  # not a choice
])
def test_cqa_failures_have_reason_and_no_label(output, reason, rationale):
    result = CQA.parse_teacher(output, choices=CHOICES)
    assert result.label is None and not result.ok
    assert result.failure_reason == reason
    assert result.rationale == rationale


def test_esnli_answer_line_and_run_on_cut():
    spec = get_spec("esnli")
    output = ("A choir singing is not necessarily at church.\nAnswer: Neutral.\n\n"
              "Premise: A man.\nHypothesis: x\nAnswer: entailment")
    result = spec.parse_teacher(output)
    assert (result.label, result.rationale) == ("neutral", "A choir singing is not necessarily at church.")
    bad = spec.parse_teacher("Hmm.\nAnswer: maybe\n\nPremise: y")
    assert bad.label is None and bad.failure_reason == parsers.LABEL_NOT_IN_SET and bad.raw_label == "maybe"
    assert spec.parse_teacher("The premise is long and").failure_reason == parsers.NO_ANSWER


def test_anli_fallback_markers_are_parsed_and_noted():
    spec = get_spec("anli1")
    plain = spec.parse_teacher("Oxford Street is in London. So the answer is contradiction.\n\nPremise: z")
    assert (plain.label, plain.raw_label, plain.notes) == ("contradiction", "contradiction", ())
    lower = spec.parse_teacher("Shameless was born in 1995, so the answer is contradiction.\n\nPremise: z")
    assert lower.label == "contradiction" and lower.notes == (parsers.FALLBACK_MARKER,)
    assert lower.raw_label is None  # the reference rule misses it
    assert lower.rationale == "Shameless was born in 1995."
    bare = spec.parse_teacher("The dates differ. The answer is entailment.")
    assert bare.label == "entailment" and bare.rationale == "The dates differ."


@pytest.mark.parametrize("output, label, reason", [
    ("He gave away half. The answer is (84 / 2).\n\nQ: A farmer has 3 cows.", "(84 / 2)", None),
    ("Add them. The answer is ((3 + 4) * 2.5).", "((3 + 4) * 2.5)", None),
    ("Add them. The answer is 1,250.", "1250", None),
    ("Add them. The answer is forty.", None, parsers.BAD_EQUATION),
    ("Add them. The answer is (forty + 2).", None, parsers.BAD_EQUATION),
])
def test_svamp_equations(output, label, reason):
    result = get_spec("svamp").parse_teacher(output)
    assert (result.label, result.failure_reason) == (label, reason)
    assert result.rationale.startswith(("He gave", "Add them"))


def test_specs_format_inputs_like_the_reference():
    cqa_raw = {"question": "Where?", "choices": list(CHOICES), "answer": "wooded area"}
    assert CQA.format_input(cqa_raw) == ("Where?\nAnswer Choices:\n(a) british columbia\n(b) body of water\n"
                                         "(c) wooded area\n(d) pay debts\n(e) feild")
    assert CQA.gold_label(cqa_raw) == "wooded area"
    nli = get_spec("anli1")
    assert nli.format_input({"premise": "P.", "hypothesis": "H."}) == "P.</s>H."
    assert [nli.gold_label({"label": i}) for i in range(3)] == list(NLI_LABELS)
    svamp = {"Body": "Dan has 84 apples.", "Question": "How many each?", "Equation": " ( 84.0 / 2.0 ) "}
    assert get_spec("svamp").format_input(svamp) == "Dan has 84 apples.\nHow many each?"
    assert get_spec("svamp").gold_label(svamp) == "( 84.0 / 2.0 )"
    assert get_spec("asdiv").gold_label({"Answer": "9 (apples)"}) == "9"
    assert {get_spec(n).metric for n in ("svamp", "asdiv")} == {"equation"}
    assert get_spec("esnli").cut_marker == "Premise" and CQA.cut_marker == "Q:"


def test_get_spec_lists_known_names():
    with pytest.raises(KeyError) as error:
        get_spec("cqa2")
    for name in ("cqa", "esnli", "anli1", "svamp", "asdiv"):
        assert name in str(error.value) and name in known_specs()


# (dataset, split) -> the reference implementation's published (parsed %, teacher = gold %) from REFERENCE.md.
_PUBLISHED = {("cqa", "test"): (100.0, 77.2), ("esnli", "test"): (100.0, 73.0), ("anli1", "test"): (99.0, 65.6)}


def _release_split(release_dir, dataset, split):
    text = (release_dir / dataset / f"{dataset}_{split}.json").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    outputs, i = [], 0
    while (release_dir / dataset / "llm" / f"{split}_CoT_{i}.json").exists():
        outputs += json.loads((release_dir / dataset / "llm" / f"{split}_CoT_{i}.json").read_text())
        i += 1
    assert len(outputs) == len(records)
    return records, outputs


@pytest.mark.parametrize("dataset, split", [("cqa", "train"), ("cqa", "test"), ("esnli", "valid"),
                                            ("esnli", "test"), ("anli1", "valid"), ("anli1", "test")])
def test_real_release_outputs(release_dir, dataset, split):
    """Every real output parses without raising; the reference rule reproduces the published
    numbers; our parser parses at least as many into the label set."""
    spec = get_spec(dataset)
    records, outputs = _release_split(release_dir, dataset, split)
    n = len(records)
    ours_parsed = ours_agree = ref_parsed = ref_agree = 0
    for raw, output in zip(records, outputs):
        gold, choices = spec.gold_label(raw), spec.choices(raw)
        result = spec.parse_teacher(output, choices=choices)
        assert result.ok == (result.failure_reason is None)
        if result.ok:
            assert result.label in (choices or spec.label_set)
        ours_parsed += result.ok
        ours_agree += result.label == gold
        ref_parsed += result.raw_label is not None
        ref_agree += result.raw_label == gold
    print(f"{dataset} {split}: n={n} ours {100 * ours_parsed / n:.2f}% parsed / {100 * ours_agree / n:.2f}% agree; "
          f"reference rule {100 * ref_parsed / n:.2f}% / {100 * ref_agree / n:.2f}%")
    if (dataset, split) in _PUBLISHED:
        parsed, agree = _PUBLISHED[(dataset, split)]
        assert round(100 * ref_parsed / n, 1) == parsed
        assert round(100 * ref_agree / n, 1) == agree
    assert ours_parsed >= ref_parsed * 0.995 and ours_parsed / n >= 0.99
    assert ours_agree >= ref_agree
