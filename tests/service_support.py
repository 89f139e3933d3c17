"""What the service tests share: one waiting helper, and the server/channel/stub fixtures of a service on a real port."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from schulki.runtime.server import Service

from tests.conftest import InProcessServer


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition", interval: float = 0.02) -> None:
    """Poll ``condition`` until it is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(interval)


def service_fixtures(build: Callable[..., Service], stub_class: Callable[[grpc.Channel], Any], *needs: str) -> tuple[Any, Any, Any]:
    """The ``server``, ``channel`` and ``stub`` fixtures of one service; assign them in a test module:

        server, channel, stub = service_fixtures(make_service, pb_grpc.InferenceServiceStub)

    ``server`` (per module): the service ``build(**needs)`` returns, started in
    this process on a free port (``server.service`` is the service); ``needs``
    names fixtures ``build`` takes (e.g. "tmp_path_factory"). ``channel`` (per
    test): a channel to it, after which the service must still report
    SERVING. ``stub``: the service's stub on that channel.
    """

    def server(**needed: Any) -> Iterator[InProcessServer]:
        service = build(**needed)
        with InProcessServer([service]) as running:
            running.service = service  # type: ignore[attr-defined]
            yield running

    # The needs are the fixture's own arguments, so that a parametrized one (store_engine) builds a server per value.
    server.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in needs]
    )
    server = pytest.fixture(scope="module")(server)

    @pytest.fixture()
    def channel(server: InProcessServer) -> Iterator[grpc.Channel]:
        with server.serving_channel() as channel:
            yield channel

    @pytest.fixture()
    def stub(channel: grpc.Channel) -> Any:
        return stub_class(channel)

    return server, channel, stub
