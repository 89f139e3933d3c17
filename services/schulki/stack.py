"""``schulki up``: every service and the gateway on this machine, as child processes.

Each service runs as ``schulki serve NAME`` in its own process, as it would in
its own container. ``run_stack`` starts them in order, waits until each
reports SERVING, prints where to go, and stops them all on Ctrl-C or SIGTERM,
or when any of them dies.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from schulki.config import Config
from schulki.runtime.client import wait_until_serving


def _address(config: Config, name: str) -> str:
    return f"{config.runtime.host}:{getattr(config, name).port}"


def run_stack(config: Config, services: list[str], start_timeout: float = 300.0) -> int:
    """Start the services, wait until they serve, and supervise them until told to stop."""
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name in services:
            print(f"schulki: starting {name} on {_address(config, name)} ...", flush=True)
            child = subprocess.Popen([sys.executable, "-m", "schulki.cli", "serve", name])
            children[name] = child
            try:
                wait_until_serving(_address(config, name), start_timeout, is_alive=lambda c=child: c.poll() is None and not stopping)
            except (RuntimeError, TimeoutError) as error:
                print(f"schulki: {name} did not start: {error}", file=sys.stderr)
                return 1
        from schulki.gateway.launch import first_admin_lines, gateway_url, https_lines, lan_url, start_gateway, wait_until_up

        admin_lines = first_admin_lines(config)
        tls_lines = https_lines(config)
        print(f"schulki: starting the gateway on port {config.gateway.port} ...", flush=True)
        gateway = children["gateway"] = start_gateway()
        try:
            wait_until_up(gateway_url(config), start_timeout, is_alive=lambda: gateway.poll() is None and not stopping)
        except (RuntimeError, TimeoutError) as error:
            print(f"schulki: gateway did not start: {error}", file=sys.stderr)
            return 1
        print("schulki is running:", flush=True)
        for name in services:
            print(f"  {name:<14} grpc://{_address(config, name)}", flush=True)
        print(f"  {'gateway':<14} {lan_url(config)}/  (API: {lan_url(config)}/v1)", flush=True)
        for line in [*tls_lines, *admin_lines]:
            print(line, flush=True)
        print("Stop with Ctrl-C.", flush=True)
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"schulki: {name} exited with status {child.returncode}; stopping the rest", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=config.runtime.grace_period_s + 10)
            except subprocess.TimeoutExpired:
                child.kill()
