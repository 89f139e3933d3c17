"""What the agent tests share: a planner that scripts the actions (the loop's test hook), a page served on loopback,
and running a whole agent run to its end from synchronous test code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from schulki.gateway.agents.loop import Choice, Finished, Step
from schulki.gateway.context import Gateway

Script = Callable[[list[dict[str, str]]], dict | str]
"""One step of a script: from the messages so far, the action (a dict, sent as JSON, or raw text)."""


class ScriptedPlanner:
    """Plays the model's part where the 270M model cannot plan: each step's action comes from the script (the last one
    repeats); the loop parses and checks it exactly as the model's. Records every prompt it was shown."""

    def __init__(self, *steps: dict | str | Script, tokens: int = 0) -> None:
        self.steps, self.tokens = list(steps), tokens
        self.seen: list[list[dict[str, str]]] = []
        self.schemas: list[str] = []

    async def choose(self, messages: list[dict[str, str]], schema: str, max_tokens: int) -> Choice:
        self.seen.append([dict(m) for m in messages])
        self.schemas.append(schema)
        step = self.steps[min(len(self.seen) - 1, len(self.steps) - 1)]
        action = step(messages) if callable(step) else step
        return Choice(action if isinstance(action, str) else json.dumps(action, ensure_ascii=False), self.tokens)


class RecordingPlanner:
    """Passes each step to another planner (the real model's) and keeps its choices."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.choices: list[Choice] = []
        self.seen: list[list[dict[str, str]]] = []

    async def choose(self, messages: list[dict[str, str]], schema: str, max_tokens: int) -> Choice:
        self.seen.append([dict(m) for m in messages])
        choice = await self.inner.choose(messages, schema, max_tokens)
        self.choices.append(choice)
        return choice


async def _with_gateway(config, action):
    """``action(gateway)`` with a Gateway of the stack's settings whose gRPC clients live on this test's event loop (the
    stack's own Gateway serves the web page on uvicorn's loop); accounts, settings and services are the stack's."""
    gateway = Gateway.create(config)
    await gateway.start()
    try:
        return await action(gateway)
    finally:
        await gateway.close()


def run(config, account, task: str, tools: list[str], planner=None) -> tuple[list[Step], Finished]:
    """One whole agent run for the account, to its end."""

    async def whole(gateway: Gateway) -> tuple[list[Step], Finished]:
        steps: list[Step] = []
        async for event in gateway.run_agent(account, task, tools, planner):
            if isinstance(event, Finished):
                return steps, event
            steps.append(event)
        raise AssertionError("a run ends with Finished")

    return asyncio.run(_with_gateway(config, whole))


def ingest_text(config, account, workspace: str, folder: Path, name: str, text: str) -> str:
    """A text file stored in a workspace through the Gateway (the user's own upload); its document id."""
    path = folder / name
    path.write_text(text, encoding="utf-8")

    async def store(gateway: Gateway) -> str:
        async for event in gateway.ingest(account, workspace, path, name):
            if event.HasField("document"):
                return event.document.document_id
        raise AssertionError("an ingest ends with its document")

    return asyncio.run(_with_gateway(config, store))


def documents(config, workspace: str) -> list[tuple[str, str]]:
    """(id, source) of every document of a workspace, asked as the retention purge asks (no user)."""

    async def listed(gateway: Gateway) -> list[tuple[str, str]]:
        return [(d.document_id, d.source) for d in await gateway.stored_documents(workspace)]

    return asyncio.run(_with_gateway(config, listed))


@contextlib.contextmanager
def served_page(html: str) -> Iterator[str]:
    """An HTML page at http://127.0.0.1:PORT/seite.html on loopback while the block runs."""
    body = html.encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/seite.html"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def allowed_host(config, url: str) -> Iterator[None]:
    """The page's host:port added to retrieval.allowed_url_hosts (the retrieval service runs in this process and reads
    the same list) while the block runs."""
    host = url.split("/")[2]
    config.retrieval.allowed_url_hosts.append(host)
    try:
        yield
    finally:
        config.retrieval.allowed_url_hosts.remove(host)
