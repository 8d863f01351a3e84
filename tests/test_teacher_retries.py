"""Retries against a real local HTTP fault injector: 429 (Retry-After), 500, timeouts; budget exhaustion."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from teacher_server import FaultPlan, ServerThread  # noqa: E402

from dsbs_jax.rationales.backends import TeacherError  # noqa: E402
from dsbs_jax.rationales.job import JobConfig, run_job  # noqa: E402

SECRET = "sk-retry-SENTINEL-77"


def _config(tmp_path, release_dir, url, **overrides):
    return JobConfig(**{**dict(dataset="cqa", split="test", out=str(tmp_path), src=str(release_dir), base_url=url,
                               model="toy", limit=6, concurrency=1, initial_backoff_s=0.01, timeout_s=0.5,
                               progress=False, api_key_env="DSBS_TEST_KEY"), **overrides})


def test_transient_faults_are_retried(release_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DSBS_TEST_KEY", SECRET)
    with ServerThread(FaultPlan(["429", "500", "hang", "429", "500"])) as server:
        manifest = run_job(_config(tmp_path, release_dir, server.url, max_retries=5))
    entry = manifest["splits"]["test"]
    assert entry["num_examples"] == 6 and entry["parse_rate"] == 1.0
    assert entry["retries"] == 5 and entry["requests"] == 11


def test_permanent_fault_fails_clearly_after_the_budget(release_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DSBS_TEST_KEY", SECRET)
    with ServerThread(FaultPlan(default="500")) as server:
        with pytest.raises(TeacherError) as error:
            run_job(_config(tmp_path, release_dir, server.url, max_retries=2))
        assert len(server.plan.seen) == 3
    message = str(error.value)
    assert "failed after 3 attempts" in message and "HTTP 500" in message and "/v1/completions" in message
    assert SECRET not in message and "resume" in message
    assert not (tmp_path / "cqa" / "manifest.json").exists()


def test_non_retryable_status_fails_at_once(release_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DSBS_TEST_KEY", SECRET)
    with ServerThread(FaultPlan(default="401")) as server:
        with pytest.raises(TeacherError, match="HTTP 401.*not retryable"):
            run_job(_config(tmp_path, release_dir, server.url))
        assert len(server.plan.seen) == 1


def test_timeouts_count_as_retryable(release_dir, tmp_path):
    with ServerThread(FaultPlan(["hang", "hang"])) as server:
        manifest = run_job(_config(tmp_path, release_dir, server.url, limit=2, timeout_s=0.3))
    assert manifest["splits"]["test"]["retries"] == 2


@pytest.mark.parametrize("status", ["404", "401"])
def test_client_errors_other_than_408_and_429_fail_at_once(release_dir, tmp_path, status):
    with ServerThread(FaultPlan(default=status)) as server:
        with pytest.raises(TeacherError, match=f"HTTP {status}.*not retryable"):
            run_job(_config(tmp_path, release_dir, server.url, max_retries=5))
        assert len(server.plan.seen) == 1


def test_credentials_in_base_url_are_sent_but_never_written(release_dir, tmp_path, monkeypatch):
    import base64
    import pathlib

    monkeypatch.delenv("DSBS_TEST_KEY", raising=False)
    with ServerThread(FaultPlan()) as server:
        url = server.url.replace("//", f"//alice:{SECRET}@")
        manifest = run_job(_config(tmp_path, release_dir, url, limit=2))
        sent = server.plan.seen[0]["headers"]["Authorization"]
    assert sent == "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert manifest["teacher"]["url"] == f"{server.url}/v1/completions"
    written = "".join(p.read_bytes().decode("latin-1") for p in pathlib.Path(tmp_path).rglob("*") if p.is_file())
    assert SECRET not in written and "alice" not in written
    job = json.loads((tmp_path / "cqa" / "_work" / "test.shard-00000-of-00001" / "job.json").read_text())
    assert job["base_url"] == server.url
