"""What every tab shares: who is asking, plain German errors and a request id per event, and the banner for a service that is down."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from schulki.gateway.accounts.database import Account
from schulki.gateway.context import Gateway
from schulki.gateway.errors import told
from schulki.gateway.web.i18n import Strings
from schulki.runtime import logs

Handler = TypeVar("Handler", bound=Callable[..., Any])
T = TypeVar("T")


def account_of(gateway: Gateway, request: gr.Request | None, s: Strings) -> Account:
    """The logged-in user of a Gradio event; the name comes from the auth dependency, never from the browser."""
    account = gateway.accounts.by_name(request.username) if request and request.username else None
    if account is None:
        raise gr.Error(s["not_logged_in"])
    return account


def as_admin(gateway: Gateway, s: Strings, request: gr.Request | None, work: Callable[[], T]) -> T:
    """An Admin tab operation for the event's user: ``Gateway.admin_only`` runs it for an admin and refuses anyone else
    (AdminOnly, shown as "Nur für Admins." by ``handles_errors``); an async ``work`` gives its coroutine back to await."""
    return gateway.admin_only(account_of(gateway, request, s), work)


def discard_upload(path: str | None) -> None:
    """Delete an upload from Gradio's cache once its event is over, refused or not (it may be a student's essay)."""
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def user_error(s: Strings, error: BaseException) -> gr.Error:
    """A gr.Error with a message a student understands (the table in ``gateway/errors.py``); other errors are bugs, raised again."""
    if isinstance(error, gr.Error):
        return error
    answer = told(error, s)
    if answer is None:
        raise error
    # an answer the table foresees (a refusal, a quota, a service that is down), not a bug: Gradio logs no traceback
    return gr.Error(answer.page, print_exception=False)


def _request_id(args: tuple, kwargs: dict) -> str:
    """The event's request id: the caller's x-request-id when it sent a plain one, else a new one."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, gr.Request):
            headers = getattr(value, "headers", None) or {}
            return logs.request_id_from(headers.get("x-request-id"))
    return logs.new_request_id()


def handles_errors(s: Strings) -> Callable[[Handler], Handler]:
    """Decorator for a Gradio event handler: one request id for the whole event (every service call it makes carries
    it), and a service that is down, a quota or a service's refusal shown as a plain gr.Error (user_error).

    The wrapper is of the handler's own kind (function, coroutine, async generator) and keeps its signature, so
    Gradio still streams its output and hands it the gr.Request and gr.Progress it asks for."""

    def decorate(handler: Handler) -> Handler:
        if inspect.isasyncgenfunction(handler):

            @functools.wraps(handler)
            async def stream(*args: Any, **kwargs: Any) -> Any:
                request_id = _request_id(args, kwargs)
                events = handler(*args, **kwargs)
                try:
                    while True:
                        # set for each step: Gradio may run the steps of one event in different tasks
                        token = logs.request_id.set(request_id)
                        try:
                            item = await anext(events)
                        except StopAsyncIteration:
                            return
                        except Exception as error:
                            raise user_error(s, error) from error
                        finally:
                            logs.request_id.reset(token)
                        yield item
                finally:
                    await events.aclose()

            return stream  # type: ignore[return-value]

        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def call(*args: Any, **kwargs: Any) -> Any:
                token = logs.request_id.set(_request_id(args, kwargs))
                try:
                    return await handler(*args, **kwargs)
                except Exception as error:
                    raise user_error(s, error) from error
                finally:
                    logs.request_id.reset(token)

            return call  # type: ignore[return-value]

        @functools.wraps(handler)
        def call_sync(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except Exception as error:
                raise user_error(s, error) from error

        return call_sync  # type: ignore[return-value]

    return decorate


def banner(gateway: Gateway, s: Strings, needs: tuple[str, ...]) -> str:
    """A plain warning for each service this tab needs that is down; empty when all serve."""
    down = [name for name in needs if not gateway.available(name)]
    return "\n\n".join(f"⚠️ **{s['service_down'].format(service=s.service(name))}**" for name in down)


def status_banner(gateway: Gateway, s: Strings, needs: tuple[str, ...], timer: gr.Timer, demo: gr.Blocks, api_name: str) -> gr.Markdown:
    """A Markdown line that shows which needed service is down, refreshed by the page's timer."""
    box = gr.Markdown(banner(gateway, s, needs), elem_classes=["service-banner"])
    timer.tick(lambda: banner(gateway, s, needs), outputs=box, api_name=api_name, show_progress="hidden")
    demo.load(lambda: banner(gateway, s, needs), outputs=box, api_name=f"{api_name}_load", show_progress="hidden")
    return box
