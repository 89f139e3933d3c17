"""``schulki up`` in a child process, as an admin starts it: every service on a free port, the gateway on plain HTTP on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from schulki.models.defaults import chat_model_path, embeddings_model_path, speech_model_path

from tests.conftest import free_port

ALL_SERVICES = ("inference", "embeddings", "transcription", "retrieval")


class UpProcess:
    """``schulki up --services ...`` with its own data folder, its output read as it comes; env adds or overrides settings."""

    def __init__(self, data_dir: Path, services: tuple[str, ...] = ALL_SERVICES, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.ports = {name: free_port() for name in (*ALL_SERVICES, "gateway")}
        self.env = {
            **os.environ,
            "SCHULKI_DATA_DIR": str(data_dir),
            "SCHULKI_INFERENCE__MODEL_PATH": str(chat_model_path()),
            "SCHULKI_EMBEDDINGS__MODEL_PATH": str(embeddings_model_path()),
            "SCHULKI_TRANSCRIPTION__MODEL_PATH": str(speech_model_path()),
            **{f"SCHULKI_{name.upper()}__PORT": str(port) for name, port in self.ports.items()},
            "SCHULKI_GATEWAY__HOST": "127.0.0.1",
            "SCHULKI_GATEWAY__HEALTH_INTERVAL_S": "0.5",
            "SCHULKI_GATEWAY__HTTPS": "false",  # plain HTTP on loopback: HTTPS has its own tests
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "schulki.cli", "up", "--services", ",".join(services)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        threading.Thread(target=lambda: self.output.extend(iter(self.process.stdout.readline, "")), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.output):
            assert self.process.poll() is None and time.monotonic() < deadline, "".join(self.output)
            time.sleep(0.1)

    def wait_until_running(self, timeout: float = 300) -> UpProcess:
        self.wait_for("Stop with Ctrl-C.", timeout)
        return self

    def service_pids(self) -> dict[str, int]:
        """The process id of each ``schulki serve NAME`` child (read from /proc)."""
        found = {}
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        for pid in map(int, children):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"serve" in argv:
                found[argv[argv.index(b"serve") + 1].decode()] = pid
        return found

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def __enter__(self) -> UpProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
