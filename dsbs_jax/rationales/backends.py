"""Teacher backends behind one small async interface.

    completion = await teacher.complete(prompt, example)   # -> Completion(text, tokens)

* `OpenAITeacher`: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, TGI, hosted APIs),
  `/v1/completions` or `/v1/chat/completions`, with rate limits and retries. The API key is read
  from an environment variable and only ever placed in the request header.
* `JaxTeacher`: our T5 (or any checkpoint `load_pretrained` reads, e.g. Flan-T5) decoding
  micro-batches on the local devices.
* `AnnotationsTeacher`: the dataset's own annotation rationale and gold label, written in the
  dataset's answer format (what `dsbs demo` runs through the job by default).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import urllib.parse
from typing import Any, Optional, Sequence

from dsbs_jax.data import schema
from dsbs_jax.data.specs import DatasetSpec
from dsbs_jax.rationales.prompts import format_answer
from dsbs_jax.rationales.ratelimit import RateLimiter

# Of the 4xx statuses only timeouts and rate limits are transient; any other 4xx is a
# configuration error (URL, model, key) that no retry fixes, so it fails at once.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class TeacherError(RuntimeError):
    """A teacher request failed for good (non-retryable status, or the retry budget is spent)."""


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclasses.dataclass
class TeacherStats:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; `Retry-After` is honoured when the server sends it."""

    max_retries: int = 6
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 120.0

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        backoff = min(self.max_backoff_s, self.initial_backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
        return max(backoff, retry_after or 0.0)


def redact_url(url: str) -> str:
    """The URL without user info or query string (where some servers put keys)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
    except ValueError:  # e.g. a port that is not a number: keep only what cannot be a secret
        return url.split("@", 1)[-1].split("?", 1)[0] if "@" in url else url.split("?", 1)[0]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def url_secrets(url: Optional[str]) -> list[str]:
    """The parts of `url` that must never be printed: its user info and query string."""
    if not url:
        return []
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    secrets = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        secrets += [userinfo, urllib.parse.unquote(userinfo)]
        if parts.password:
            secrets += [parts.password, urllib.parse.unquote(parts.password)]
    if parts.query:
        secrets.append(parts.query)
    return [s for s in secrets if s]


def redact_text(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret replaced by <redacted> (longest first)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


class OpenAITeacher:
    """An OpenAI-compatible HTTP teacher (aiohttp; one session, `concurrency` connections)."""

    def __init__(self, base_url: str, model: str, *, api_style: str = "completions", temperature: float = 0.0,
                 max_tokens: int = 256, stop: Sequence[str] = (), api_key_env: Optional[str] = "OPENAI_API_KEY",
                 retry: RetryPolicy = RetryPolicy(), limiter: Optional[RateLimiter] = None, concurrency: int = 8):
        if api_style not in ("completions", "chat"):
            raise ValueError(f"api_style must be 'completions' or 'chat', found {api_style!r} (--api_style).")
        # Credentials in the URL (https://user:pass@host) go into an Authorization header and are
        # kept out of self.url, which error messages and the manifest show.
        self._secrets = url_secrets(base_url)
        parts = urllib.parse.urlsplit(base_url)
        self._auth = None
        if parts.username is not None:
            import aiohttp

            self._auth = aiohttp.BasicAuth(urllib.parse.unquote(parts.username),
                                           urllib.parse.unquote(parts.password or ""))
            parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
        base = parts._replace(query="", fragment="").geturl().rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        self.url = f"{base}/{'chat/completions' if api_style == 'chat' else 'completions'}"
        self._request_url = self.url + (f"?{parts.query}" if parts.query else "")
        self.model, self.api_style = model, api_style
        self.temperature, self.max_tokens, self.stop = temperature, max_tokens, list(stop)[:4]  # OpenAI allows 4
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        if self._api_key:
            self._secrets.append(self._api_key)
        self.retry, self.limiter, self.concurrency = retry, limiter or RateLimiter(), concurrency
        self.stats = TeacherStats()
        self._session = None

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def describe(self) -> dict:
        """The configuration for the manifest (no secrets)."""
        return {"backend": "openai", "url": redact_url(self.url), "model": self.model, "api_style": self.api_style,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "stop": self.stop,
                "api_key": "set" if self._api_key else "unset"}

    async def __aenter__(self) -> "OpenAITeacher":
        import aiohttp

        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    def _body(self, prompt: str) -> dict:
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens, "n": 1}
        if self.stop:
            body["stop"] = self.stop
        if self.api_style == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def _parse(self, data: dict) -> Completion:
        choice = data["choices"][0]
        text = choice["message"]["content"] if self.api_style == "chat" else choice["text"]
        usage = data.get("usage") or {}
        return Completion(text or "", int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

    async def complete(self, prompt: str, example: Optional[schema.Example] = None) -> Completion:
        import aiohttp

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        auth = None if self._api_key else self._auth  # aiohttp refuses both at once
        estimated_tokens = len(prompt) // 4 + self.max_tokens
        last_error = ""
        for attempt in range(self.retry.max_retries + 1):
            await self.limiter.acquire(estimated_tokens)
            retry_after = None
            self.stats.requests += 1
            try:
                async with self._session.post(self._request_url, json=self._body(prompt), headers=headers, auth=auth,
                                              timeout=aiohttp.ClientTimeout(total=self.retry.timeout_s)) as response:
                    if response.status == 200:
                        body = await response.read()
                        try:
                            completion = self._parse(json.loads(body))
                        except (ValueError, KeyError, IndexError, TypeError) as error:
                            # A 200 that is not an OpenAI reply is a wrong URL, not a flaky server.
                            detail = self._redact(" ".join(body[:120].decode("utf-8", "replace").split()))
                            raise TeacherError(
                                f"Teacher {self.url} answered HTTP 200 with a body that is not an OpenAI "
                                f"{self.api_style} reply ({type(error).__name__}; body starts {detail!r}); check "
                                "--base_url (an OpenAI-compatible server) and --api_style.") from None
                        self.stats.prompt_tokens += completion.prompt_tokens
                        self.stats.completion_tokens += completion.completion_tokens
                        return completion
                    detail = self._redact(" ".join((await response.text())[:200].split()))
                    last_error = f"HTTP {response.status}: {detail}"
                    if response.status not in RETRYABLE_STATUS:
                        raise TeacherError(f"Teacher {self.url} answered {last_error} (not retryable; "
                                           "check --model, --base_url and the API key variable --api_key_env).")
                    retry_after = _seconds(response.headers.get("Retry-After"))
            except (asyncio.TimeoutError, aiohttp.ClientError) as error:
                last_error = self._redact(f"{type(error).__name__}: {error}")
            if attempt < self.retry.max_retries:
                self.stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
        raise TeacherError(f"Teacher {self.url} failed after {self.retry.max_retries + 1} attempts; "
                           f"last error: {last_error}. Finished ids are committed: re-run the same command to resume "
                           "(raise --max_retries or --timeout for a flaky server).")


def _seconds(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class AnnotationsTeacher:
    """Answers with the example's own annotation (its first rationale and gold label)."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.stats = TeacherStats()

    def describe(self) -> dict:
        return {"backend": "annotations"}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def complete(self, prompt: str, example: schema.Example) -> Completion:
        self.stats.requests += 1
        if not example.rationales or example.label is None:
            return Completion("")  # counted as a parse failure (empty_output), never invented
        return Completion(format_answer(self.spec, example.rationales[0], example.label, example.choices))


class JaxTeacher:
    """Our T5 decoding micro-batches of prompts on the local devices (TPU users stay in JAX).

    Requests are collected until `batch_size` are waiting (or a short delay passes) and decoded
    together in a worker thread, so the event loop keeps feeding the batcher.
    """

    def __init__(self, params: Any, config: Any, spm_path: str, *, batch_size: int = 8, max_input_len: int = 512,
                 max_decode_len: int = 64, method: str = "greedy", temperature: float = 0.0, seed: int = 0):
        import sentencepiece

        self.params, self.config = params, config
        self.tokenizer = sentencepiece.SentencePieceProcessor(model_file=spm_path)
        self.batch_size, self.max_input_len, self.max_decode_len = batch_size, max_input_len, max_decode_len
        self.method, self.temperature, self.seed = method, temperature, seed
        self.spm_path = spm_path
        self.stats = TeacherStats()
        self._pending: list = []
        self._flush_handle = None
        self._batches = 0

    @classmethod
    def from_checkpoint(cls, path: str, spm_path: str, **kwargs) -> "JaxTeacher":
        from dsbs_jax.models.checkpoints import load_pretrained

        params, config = load_pretrained(path)
        return cls(params, config, spm_path, **kwargs)

    def describe(self) -> dict:
        return {"backend": "jax", "vocabulary": self.spm_path, "method": self.method, "batch_size": self.batch_size,
                "max_decode_len": self.max_decode_len, "temperature": self.temperature,
                "model": {"emb_dim": self.config.emb_dim, "layers": self.config.num_encoder_layers}}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def complete(self, prompt: str, example: Optional[schema.Example] = None) -> Completion:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((prompt, future))
        if len(self._pending) >= self.batch_size:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(0.05, self._flush)
        return await future

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._pending = self._pending[:self.batch_size], self._pending[self.batch_size:]
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch))
        if self._pending:
            self._flush_handle = asyncio.get_running_loop().call_later(0.05, self._flush)

    async def _run(self, batch) -> None:
        try:
            results = await asyncio.to_thread(self._decode, [prompt for prompt, _ in batch])
        except Exception as error:  # the job reports it per request
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)

    def _decode(self, prompts: list[str]) -> list[Completion]:
        import jax
        import numpy as np

        from dsbs_jax.models import decoding

        # Keep the end of long prompts: the question to answer comes last.
        encoded = [self.tokenizer.encode(p)[-(self.max_input_len - 1):] + [1] for p in prompts]
        length = decoding.bucket_length(max(len(e) for e in encoded), self.max_input_len)
        tokens = np.zeros((self.batch_size, length), np.int32)  # fixed batch: one compile per length
        for row, ids in enumerate(encoded):
            tokens[row, :len(ids)] = ids
        self._batches += 1
        out = decoding.generate(self.params, self.config, tokens, method=self.method,
                                max_decode_length=self.max_decode_len, temperature=max(self.temperature, 1e-6),
                                rng=jax.random.PRNGKey(self.seed + self._batches))
        out = np.asarray(out)
        # T5 checkpoints pad the vocabulary past the SentencePiece model (32128 ids for 32100 pieces),
        # and a model may emit the padding ids; they decode as <unk>, as in seqio's vocabulary.
        pieces, unk = self.tokenizer.get_piece_size(), self.tokenizer.unk_id()
        results = []
        for row, ids in enumerate(encoded):
            decoded = [int(t) if t < pieces else unk for t in out[row] if t not in (0, 1)]
            text = self.tokenizer.decode(decoded)
            self.stats.requests += 1
            self.stats.prompt_tokens += len(ids)
            self.stats.completion_tokens += len(decoded)
            results.append(Completion(text, len(ids), len(decoded)))
        return results
