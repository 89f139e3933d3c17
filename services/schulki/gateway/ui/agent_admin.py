"""The Admin tab's agent section: which roles may use the chat tab's agent mode (admins always may), stored in the
accounts database as the other Admin tab settings are, and the run's limits from the settings file."""

from __future__ import annotations

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.ui.common import account_of, handles_errors
from schulki.gateway.web.i18n import Strings

TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "box": "Agent-Modus im Chat",
        "roles": "Rollen, die den Agent-Modus benutzen dürfen (Admins immer)",
        "student": "Schülerinnen und Schüler",
        "teacher": "Lehrkräfte",
        "limits": "Grenzen je Lauf (Einstellungen unter gateway.agents): höchstens {steps} Schritte und {tokens} Tokens.",
        "saved": "Gespeichert: Agent-Modus für {roles}.",
        "nobody": "nur Admins",
    },
    "en": {
        "box": "Agent mode in the chat",
        "roles": "Roles that may use the agent mode (admins always may)",
        "student": "Students",
        "teacher": "Teachers",
        "limits": "Limits per run (settings under gateway.agents): at most {steps} steps and {tokens} tokens.",
        "saved": "Saved: agent mode for {roles}.",
        "nobody": "admins only",
    },
}


def build_agent_settings(gateway: Gateway, s: Strings, refresh: gr.Button) -> None:
    """The section, filled by the Admin tab's refresh button (``admin_agent_roles``) and saved by its own button
    (``admin_agent_save``); both go through ``Gateway``'s admin check."""
    t = TEXTS.get(s.lang, TEXTS["de"])
    settings = gateway.config.gateway.agents
    with gr.Accordion(t["box"], open=False):
        roles = gr.CheckboxGroup([(t["student"], "student"), (t["teacher"], "teacher")], label=t["roles"], elem_id="admin-agent-roles")
        gr.Markdown(t["limits"].format(steps=settings.max_steps, tokens=settings.max_tokens))
        save = gr.Button(s["save"], elem_id="admin-agent-save")
        result = gr.Markdown(elem_id="admin-agent-result")

    @handles_errors(s)
    def current(request: gr.Request) -> list[str]:
        return gateway.agent_roles(account_of(gateway, request, s))

    @handles_errors(s)
    def store(chosen: list[str], request: gr.Request) -> str:
        saved = gateway.set_agent_roles(account_of(gateway, request, s), chosen)
        return t["saved"].format(roles=", ".join(t[role] for role in saved) or t["nobody"])

    refresh.click(current, None, roles, api_name="admin_agent_roles")
    save.click(store, roles, result, api_name="admin_agent_save")
