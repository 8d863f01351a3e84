"""Integration: the rationale job against a real LLM (SmolLM2-135M via llama.cpp's OpenAI-compatible server)."""
import os
import signal

import pytest

from dsbs_jax.data import tfrecords
from dsbs_jax.rationales import local_server
from dsbs_jax.rationales.job import JobConfig, run_job

N = 20

if not local_server.llama_server_available():
    pytest.skip(f"llama.cpp server / SmolLM2 GGUF not installed: {local_server.INSTALL_HINT}", allow_module_level=True)


@pytest.mark.parametrize("api_style", ["completions"])
def test_real_llm_teacher_on_real_cqa_inputs(release_dir, tmp_path, api_style):
    with local_server.start_llama_server() as url:
        manifest = run_job(JobConfig(dataset="cqa", split="test", out=str(tmp_path), src=str(release_dir),
                                     base_url=url, model="smollm2", api_style=api_style, limit=N, max_tokens=48,
                                     concurrency=2, progress=False))
    entry = manifest["splits"]["test"]
    examples = list(tfrecords.read_split(str(tmp_path / "cqa"), "test", verify=True))
    assert len(examples) == entry["num_examples"] == N and len({e.id for e in examples}) == N
    assert entry["num_with_teacher_output"] == N and entry["requests"] == N
    failures = sum(entry["parse_failures"].values())
    parsed = sum(e.teacher_meta["parse_failure"] is None for e in examples)
    assert parsed + failures == N and round(entry["parse_rate"] * N) == parsed
    assert set(entry["parse_failures"]) <= {"no_answer", "label_not_in_set", "empty_output", "ambiguous_answer"}
    assert entry["output_tokens"] > 0 and entry["input_tokens"] > N * 100  # the few-shot prompt was sent
    assert manifest["teacher"]["model"] == "smollm2" and "127.0.0.1" in manifest["teacher"]["url"]
    for example in examples:
        assert example.teacher_meta["parse_failure"] or example.teacher_label in example.choices


def test_check_generation_decodes_a_token_and_names_a_broken_model(tmp_path):
    assert local_server.check_generation() is None
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf")
    problem = local_server.check_generation(str(broken))
    assert problem and "exited with code" in problem and str(broken) in problem
    assert "\n" not in problem  # one line: the child's exception, not its traceback
    missing = tmp_path / "missing.gguf"
    assert local_server.check_generation(str(missing)) == f"{missing}: no such file"


def test_a_server_killed_by_sigill_is_reported_with_the_rebuild_command():
    psutil = pytest.importorskip("psutil")
    with pytest.raises(RuntimeError) as raised:
        with local_server.start_llama_server() as url:
            (server,) = [p for p in psutil.Process().children() if "llama_cpp.server" in " ".join(p.cmdline())]
            server.send_signal(signal.SIGILL)
            # Wait for its exit but leave it unreaped, so that the server's own Popen sees the signal.
            os.waitid(os.P_PID, server.pid, os.WEXITED | os.WNOWAIT)
    message = str(raised.value)
    assert url in message and "SIGILL" in message and "illegal instruction" in message
    assert "GGML_NATIVE=OFF" in message and "--no-cache-dir" in message
