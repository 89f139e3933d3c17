"""What every tab shares: who is asking, plain German errors, and the banner for a service that is down."""

from __future__ import annotations

import contextlib
import os

import gradio as gr
import grpc

from schulki.gateway.accounts import Account
from schulki.gateway.clients import AnswerBrokeOff, ServiceDown
from schulki.gateway.context import Gateway
from schulki.gateway.i18n import Strings
from schulki.gateway.quotas import QuotaExceeded


def account_of(gateway: Gateway, request: gr.Request | None, s: Strings) -> Account:
    """The logged-in user of a Gradio event; the name comes from the auth dependency, never from the browser."""
    account = gateway.accounts.by_name(request.username) if request and request.username else None
    if account is None:
        raise gr.Error(s["not_logged_in"])
    return account


def discard_upload(path: str | None) -> None:
    """Delete an upload from Gradio's cache once its event is over, refused or not (it may be a student's essay)."""
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def user_error(s: Strings, error: BaseException) -> gr.Error:
    """A gr.Error with a message a student understands."""
    if isinstance(error, AnswerBrokeOff):
        return gr.Error(s["answer_broke_off"])
    if isinstance(error, ServiceDown):
        return gr.Error(s["service_down"].format(service=s.service(error.service)))
    if isinstance(error, QuotaExceeded):
        return gr.Error(error.message)
    if isinstance(error, grpc.RpcError):
        return gr.Error(s["error"].format(message=error.details() or error.code().name))
    if isinstance(error, gr.Error):
        return error
    raise error


def banner(gateway: Gateway, s: Strings, needs: tuple[str, ...]) -> str:
    """A plain warning for each service this tab needs that is down; empty when all serve."""
    down = [name for name in needs if not gateway.services.available(name)]
    return "\n\n".join(f"⚠️ **{s['service_down'].format(service=s.service(name))}**" for name in down)


def status_banner(gateway: Gateway, s: Strings, needs: tuple[str, ...], timer: gr.Timer, demo: gr.Blocks, api_name: str) -> gr.Markdown:
    """A Markdown line that shows which needed service is down, refreshed by the page's timer."""
    box = gr.Markdown(banner(gateway, s, needs), elem_classes=["service-banner"])
    timer.tick(lambda: banner(gateway, s, needs), outputs=box, api_name=api_name, show_progress="hidden")
    demo.load(lambda: banner(gateway, s, needs), outputs=box, api_name=f"{api_name}_load", show_progress="hidden")
    return box
