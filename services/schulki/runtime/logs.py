"""Logging with a request id on every line and no user content by default.

Each RPC runs with its request id in a context variable (taken from the
caller's ``x-request-id`` metadata, so one id follows a request from the
gateway through every service, or made up when the caller sent none). The log
format prints it on every line. Text that users wrote or uploaded goes through
``content()``, which hides it unless an admin turned on ``log_content``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_log_content = False


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure(level: str = "INFO", log_content: bool = False) -> None:
    """Set up logging for a service process; safe to call more than once."""
    global _log_content  # noqa: PLW0603 - one switch per process, set once at start and read by every log call
    _log_content = log_content
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, "_schulki", False):
            return
    handler = logging.StreamHandler(sys.stderr)
    handler._schulki = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)


def new_request_id() -> str:
    """A fresh, short request id."""
    return uuid.uuid4().hex[:16]


_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_from(header: str | None) -> str:
    """The caller's ``x-request-id`` when it is a short plain token (it goes into every log line), else a fresh id."""
    return header if header and _PLAIN_ID.fullmatch(header) else new_request_id()


def current_request_id() -> str | None:
    """The id of the request being handled in this context, or None outside one (a health check, a purge)."""
    value = request_id.get()
    return None if value == "-" else value


def content(text: str) -> str:
    """The text itself when an admin allowed content in logs, else only its length."""
    if _log_content:
        return repr(text)
    return f"<{len(text)} chars hidden>"
