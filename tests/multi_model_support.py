"""Several inference nodes serving two model names behind one gateway, for the routing tests, the picker tests and the load run.

The demo GGUF serves under two names (``inference.model_name``), so two models
cost no second download; ``second_quant`` makes a Q5_K_M of it with llama.cpp's own
quantizer, a second quant of the same catalog model, as another card would get. Nodes run either as ``schulki serve inference`` child
processes (to be killed and restarted) or in this process (cheaper, for UI tests).
Every node uses one thread and a small context, to stay light on a shared machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schulki.config import Config
from schulki.gateway.app import create_app
from schulki.gateway.context import Gateway
from schulki.inference.service import InferenceService
from schulki.models.defaults import chat_model_path
from schulki.runtime.client import wait_until_serving

from tests import service_support
from tests.conftest import InProcessServer, free_port
from tests.gateway_stack import UvicornThread

NODE_ENV = {
    "SCHULKI_INFERENCE__THREADS": "1",
    "SCHULKI_INFERENCE__CONTEXT_LENGTH": "512",
    "SCHULKI_INFERENCE__BATCH_SIZE": "64",
    "SCHULKI_INFERENCE__MAX_QUEUED": "64",
    "SCHULKI_INFERENCE__MAX_QUEUED_PER_USER": "64",
}


class NodeProcess:
    """``schulki serve inference`` under a model name, logging to a file, that a test can kill and start again on the same port."""

    def __init__(self, model_name: str, log_dir: Path, port: int | None = None, model_path: Path | None = None):
        self.model_name = model_name
        """The name it serves under; empty: the name the file gives (the catalog id for a catalog model's file)."""
        self.model_path = model_path or chat_model_path()
        self.port = port or free_port()
        self.log_path = log_dir / f"node-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> NodeProcess:
        env = {
            **os.environ,
            **NODE_ENV,
            "SCHULKI_INFERENCE__MODEL_PATH": str(self.model_path),
        }
        if self.model_name:
            env["SCHULKI_INFERENCE__MODEL_NAME"] = self.model_name
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "schulki.cli", "serve", "inference", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until_serving(self.address, timeout, is_alive=lambda: self.process.poll() is None)
        return self

    def kill(self) -> None:
        """Die at once, as a machine that loses power (no grace period)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def answered(self) -> int:
        """Chats this node generated to the end, counted from its own log."""
        return self.log_path.read_text(errors="replace").count("chat done:") if self.log_path.exists() else 0


SECOND_QUANT = "Q5_K_M"


def second_quant(folder: Path) -> Path:
    """The demo model requantized to Q5_K_M (about 3 s): another quant of the same catalog model, named as the mirror names files."""
    target = folder / f"gemma-3-270m-{SECOND_QUANT.lower()}.gguf"
    if target.exists():
        return target
    script = (
        "import ctypes, sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        f"p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_{SECOND_QUANT}\n"
        "p.allow_requantize = True\n"
        "p.nthread = 1\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n"
    )
    partial = target.with_suffix(".partial")
    run = subprocess.run([sys.executable, "-c", script, str(chat_model_path()), str(partial)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    partial.replace(target)
    return target


@dataclass
class MultiModelGateway:
    url: str
    config: Config
    gateway: Gateway

    def wait_until(self, condition, timeout: float = 30.0, what: str = "condition") -> None:
        service_support.wait_until(condition, timeout, what, interval=0.05)

    def node(self, address: str):
        return next(node for node in self.gateway.inference_nodes() if node.address == address)


def gateway_config(data_dir: Path, addresses: list[str]) -> Config:
    config = Config(data_dir=data_dir)
    config.gateway.inference_addresses = addresses
    for name in ("embeddings", "transcription", "retrieval"):  # not needed here: ports where nothing listens
        setattr(config.gateway, f"{name}_addresses", [f"127.0.0.1:{free_port()}"])
    config.gateway.health_interval_s = 0.5
    config.gateway.max_chat_tokens = 16
    config.gateway.requests_per_minute = {"student": 10_000, "teacher": 10_000, "admin": 10_000}
    return config


@contextlib.contextmanager
def running_gateway(config: Config) -> Iterator[MultiModelGateway]:
    gateway = Gateway.create(config)
    with UvicornThread(create_app(config, gateway)) as web:
        running = MultiModelGateway(web.url, config, gateway)
        running.wait_until(lambda: len(gateway._services.serving_models()) > 0, 60, "a serving chat model")
        yield running


@contextlib.contextmanager
def in_process_nodes(names: list[str]) -> Iterator[list[InProcessServer]]:
    """One in-process inference server per name, each the demo GGUF served under that name."""
    with contextlib.ExitStack() as stack:
        servers = []
        for name in names:
            config = Config()
            config.inference.model_name = name
            config.inference.threads = 1
            config.inference.context_length = 512
            config.inference.batch_size = 64
            servers.append(stack.enter_context(InProcessServer([InferenceService(config.inference, chat_model_path())])))
        yield servers
