"""README.md is a user's guide that cannot drift from the code: its commands run here, as written.

Every fenced `bash`/`python` block of the README belongs to exactly one runner below: the set-up
commands to CI (`.ci/run` takes them from the README itself), the others to a test that extracts the
block and runs its text unchanged in a scratch directory. The own-data walk-through runs end to end
with a real teacher (SmolLM2-135M on llama.cpp, on 127.0.0.1), and the Hugging Face export must
print exactly what `dsbs predict` wrote.
"""
from __future__ import annotations

import json
import os
import pathlib
import random
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_WORDS = 900
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(section heading, language, body) of every fenced block, in order."""
    found = []
    for match in BLOCK.finditer(text):
        headings = re.findall(r"^## (.+)$", text[:match.start()], re.M)
        found.append((headings[-1] if headings else "", match.group(1), match.group(2)))
    return found


def section(heading: str, language: str) -> list[str]:
    return [body for h, lang, body in blocks(README.read_text()) if h == heading and lang == language]


SETUP = "Set-up: two commands"
OWN_DATA = "Your own data, end to end"
PAPER = "The paper's datasets"
DEMO_COMMAND = "dsbs demo --out dsbs_demo_out"
TEST_COMMAND = "python -m pytest -q -n 2 --dist loadfile tests"
# Who runs each block: .ci/run and tests/test_demo.py for the set-up commands, the tests below for the rest.
RUNNERS = {(SETUP, "bash"): ".ci/run", (OWN_DATA, "bash"): "test_own_data_section_as_written",
           (OWN_DATA, "python"): "test_own_data_section_as_written", (PAPER, "bash"): "test_paper_section_as_written"}


def test_readme_is_short_and_every_block_has_a_runner():
    text = README.read_text()
    assert len(text.split()) < MAX_WORDS, len(text.split())
    found = blocks(text)
    assert found and all((h, lang) in RUNNERS for h, lang, _ in found), [(h, lang) for h, lang, _ in found]
    # Commands outside fenced blocks would escape the runners: no `$ ` or indented shell lines.
    assert not re.search(r"^(    |\$ )dsbs ", text, re.M)


def test_ci_runs_the_readmes_test_command():
    """.ci/run runs the test command; the demo's 5-9 minutes stay out of CI (tests/test_demo.py runs
    `dsbs demo` in its quick mode)."""
    commands = [line for body in section(SETUP, "bash") for line in body.splitlines() if line.strip()]
    assert commands == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && " + DEMO_COMMAND,
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && ' + TEST_COMMAND]
    ci = (REPO / ".ci" / "run").read_text()
    # .ci/run reads the test command out of README.md by its tail and runs it.
    assert re.findall(r"readme_command '([^']+)'", ci) == [TEST_COMMAND]


def _env(tmp: pathlib.Path) -> dict:
    """A user's shell: the venv's `dsbs` on PATH, one CPU device, none of the test suite's settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "DSBS_DATA_ROOT", "DSBS_SPM_PATH", "PYTHONPATH", "DSBS_VERBOSE")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["HOME"] = str(tmp)  # nothing read from the developer's home
    return env


def _bash(script: str, cwd: pathlib.Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_paper_section_as_written(release_dir, tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "dsbs_release").symlink_to(release_dir)
    work = tmp_path / "work"  # so that ../shared/data/dsbs_release is the release, as beside a checkout
    work.mkdir()
    (body,) = section(PAPER, "bash")
    result = _bash(body, work, _env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((work / "data" / "cqa" / "manifest.json").read_text())
    counts = {split: entry["num_examples"] for split, entry in manifest["splits"].items()}
    assert counts == {"train": 8766, "valid": 975, "test": 1221}  # the counts the README states


def _questions(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append({"question": f"What is {a} plus {b}?", "answer": a + b, "explanation": f"{a} + {b} = {a + b}."})
    return rows


def test_own_data_section_as_written(tmp_path):
    from dsbs_jax.rationales import local_server

    if not local_server.llama_server_available():
        pytest.skip(f"llama.cpp server / SmolLM2 GGUF not installed: {local_server.INSTALL_HINT}")
    (body,) = section(OWN_DATA, "bash")
    (snippet,) = section(OWN_DATA, "python")
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _questions(60, 0)))
    (tmp_path / "questions.jsonl").write_text(
        "".join(json.dumps({"question": r["question"]}) + "\n" for r in _questions(6, 1)))
    env = _env(tmp_path)
    with local_server.start_llama_server() as url:
        result = _bash(body, tmp_path, {**env, "TEACHER_URL": url, "TEACHER_MODEL": "smollm2"}, timeout=1500)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output and "error:" not in output

    # Stage by stage, what the README promises.
    assert "held out 6 of 60 train examples as 'valid'" in result.stdout
    assert "Vocabulary: " in result.stderr and "the dataset's own" in result.stderr
    record = json.loads((tmp_path / "runs" / "mine" / "dsbs_run.json").read_text())
    assert record["vocabulary"]["sentencepiece_model_file"].startswith(str(tmp_path / "data" / "mine" / "vocab"))
    assert record["model"]["vocab_size"] % 128 == 0 and record["model"]["vocab_size"] < 1024  # fitted, not 32128
    eval_line = re.search(r'"eval/mine_label_gold/accuracy": ([\d.]+)', result.stdout)
    assert eval_line, result.stdout[-2000:]
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 6
    for row in answers:  # real text, not <unk> pieces
        assert row["prediction"] and "⁇" not in row["prediction"] and "⁇" not in row["rationale"], row
    config = json.loads((tmp_path / "mine_hf" / "config.json").read_text())
    assert config["task_specific_params"]["predict"]["prefix"] == "predict: "
    assert config["task_specific_params"]["explain"]["prefix"] == "explain: "

    # The README's transformers snippet prints, line for line, what `dsbs predict` wrote.
    hf = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600)
    assert hf.returncode == 0, hf.stderr[-3000:]
    assert hf.stdout.splitlines() == [row["prediction"] for row in answers]
