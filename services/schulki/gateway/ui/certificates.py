"""The Admin tab's warning about certificates that run out soon (read by gateway/nodes/certificate_expiry.py)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.nodes.certificate_expiry import Expiry, expiring, known_certificates
from schulki.gateway.ui.common import as_admin, handles_errors
from schulki.gateway.web.i18n import Strings


def certificate_warning(s: Strings, soon: Sequence[Expiry], now: datetime.datetime | None = None) -> str:
    """A warning naming each certificate that ends within the warning period, or nothing."""
    if not soon:
        return ""
    lines = [s["certificates_expiring"], ""]
    for certificate in soon:
        date, days = certificate.not_after.strftime("%Y-%m-%d"), int(certificate.days_left(now))
        when = s["certificate_ends"].format(date=date, days=days) if days >= 0 else s["certificate_ended"].format(date=date)
        lines.append(f"- **{certificate.what}** ({certificate.subject}): {when}")
    return "\n".join(lines)


def build_certificate_warning(gateway: Gateway, s: Strings, refresh: gr.Button) -> None:
    """A line under the Admin tab's refresh button, filled by it, that stays empty while every certificate has time left."""
    warning = gr.Markdown(elem_id="admin-certificates")

    @handles_errors(s)
    async def show(request: gr.Request) -> str:
        return await as_admin(gateway, s, request, warning_now)

    async def warning_now() -> str:
        addresses = list(dict.fromkeys(node.address for nodes in gateway.nodes().values() for node in nodes))
        return certificate_warning(s, expiring(await known_certificates(gateway.config, addresses)))

    refresh.click(show, None, warning, api_name="admin_certificates")
