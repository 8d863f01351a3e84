"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests: deterministic CQA-style answers,
optional delay, and on-purpose faults (429 with Retry-After, 500, hangs) to exercise retries.

It is a controllable peer for the real HTTP client, not a stand-in for a teacher's quality:
the real-LLM path is tested against llama.cpp in test_llama_teacher.py.

    python tests/teacher_server.py PORT [DELAY_S]     # standalone, for subprocess tests
"""
from __future__ import annotations

import asyncio
import re
import socket
import sys
import threading
from typing import Optional

from aiohttp import web


def answer_for(prompt: str) -> str:
    """Names the first answer choice of the last question in the prompt."""
    question = prompt.rsplit("Q:", 1)[-1]
    choices = re.findall(r"^\(([a-e])\) (.+)$", question, flags=re.M)
    letter, choice = choices[0] if choices else ("a", "yes")
    return f" The question asks about {choice}. So the answer is ({letter}) {choice}.\n\nQ: run-on text"


class FaultPlan:
    """What the next requests get: a list consumed front to back ('429', '500', '401', '404', 'hang', 'html',
    'junk', 'ok'); then `default`."""

    def __init__(self, plan=(), default: str = "ok", delay_s: float = 0.0):
        self.plan, self.default, self.delay_s = list(plan), default, delay_s
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        # Requests after the first `hold_after` wait until `release` is set (a job held mid-run).
        self.hold_after: Optional[int] = None
        self.release = threading.Event()

    def next(self) -> str:
        with self.lock:
            return self.plan.pop(0) if self.plan else self.default


def make_app(plan: FaultPlan) -> web.Application:
    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        plan.seen.append({"headers": dict(request.headers), "body": body, "path": request.path})
        if plan.hold_after is not None and len(plan.seen) > plan.hold_after:
            while not plan.release.is_set():
                await asyncio.sleep(0.01)
        action = plan.next()
        if action == "429":
            return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "0.1"})
        if action == "500":
            return web.json_response({"error": "boom"}, status=500)
        if action == "hang":
            await asyncio.sleep(5)
        if action in ("401", "404"):
            return web.json_response({"error": "bad key or model"}, status=int(action))
        if action == "html":  # a 200 that is not an OpenAI reply (e.g. --base_url points at a web page)
            return web.Response(text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")
        if action == "junk":  # parses as nothing: no answer phrase
            text = "A:."
            choice = {"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text}
            return web.json_response({"choices": [{**choice, "index": 0}], "usage": {}})
        await asyncio.sleep(plan.delay_s)
        prompt = body.get("prompt") or body["messages"][-1]["content"]
        text = answer_for(prompt)
        choice = {"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text}
        return web.json_response({"choices": [{**choice, "index": 0}],
                                  "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4}})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """Runs the app in a background thread; `url` is its base URL."""

    def __init__(self, plan: FaultPlan, port: Optional[int] = None):
        self.plan, self.port = plan, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(make_app(self.plan), shutdown_timeout=0.1)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


if __name__ == "__main__":
    web.run_app(make_app(FaultPlan(delay_s=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)),
                host="127.0.0.1", port=int(sys.argv[1]), print=None)
