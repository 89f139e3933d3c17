"""The chat tab's agent mode: the tools a user lets the agent use, a button that runs the task in the message box as an
agent, and the run's trace step by step in the conversation (German, as the loop writes it).

The box is shown only to a role the admin switched on (Admin tab); the run itself is refused for anyone else by
``Gateway.run_agent``, whatever this page shows or an API caller sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import gradio as gr

from schulki.gateway.agents.loop import Finished
from schulki.gateway.agents.tools import TOOLS
from schulki.gateway.context import Gateway
from schulki.gateway.ui.common import account_of, handles_errors
from schulki.gateway.web.i18n import Strings
from schulki.gateway.web.safe_markup import plain

TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "box": "Agent-Modus",
        "intro": (
            "Im Agent-Modus erledigt das Modell deine Aufgabe in mehreren Schritten mit den Werkzeugen, die du unten "
            "erlaubst, nur in deinen eigenen Dokumenten. Jeder Schritt erscheint im Chat."
        ),
        "tools": "Werkzeuge, die der Agent benutzen darf",
        "run": "Als Agent ausführen",
        "trace": "**Agent:**",
    },
    "en": {
        "box": "Agent mode",
        "intro": (
            "In agent mode the model works on your task in several steps with the tools you allow below, in your own "
            "documents only. Each step appears in the chat (in German)."
        ),
        "tools": "Tools the agent may use",
        "run": "Run as agent",
        "trace": "**Agent:**",
    },
}


def build_agent_box(gateway: Gateway, s: Strings, demo: gr.Blocks, textbox: gr.Textbox, chatbot: gr.Chatbot, messages: gr.State) -> None:
    """The agent box below the conversation, and its events (``chat_agent_mode``, ``chat_agent``)."""
    t = TEXTS.get(s.lang, TEXTS["de"])
    with gr.Accordion(t["box"], open=True, visible=False, elem_id="agent-box") as box:
        gr.Markdown(t["intro"])
        with gr.Row():
            tools = gr.CheckboxGroup(
                [(tool.label, tool.name) for tool in TOOLS.values()],
                value=["dokumente_suchen"],
                label=t["tools"],
                elem_id="agent-tools",
                scale=4,
            )
            run = gr.Button(t["run"], variant="primary", elem_id="agent-run", scale=1)

    def shown(request: gr.Request) -> gr.Accordion:
        return gr.Accordion(visible=gateway.agent_allowed(account_of(gateway, request, s)))

    @handles_errors(s)
    async def agent_turn(
        task: str, history: list[dict], chosen: list[str], request: gr.Request
    ) -> AsyncIterator[tuple[list[dict], list[dict], str]]:
        account = account_of(gateway, request, s)
        run_ = gateway.run_agent(account, task, chosen)  # the role, the task and the tools are checked here
        async with aclosing(run_):
            event = await anext(run_)  # a refusal reaches the page before the conversation changes
            history = [*list(history or []), {"role": "user", "content": str(task).strip()}, {"role": "assistant", "content": t["trace"]}]
            lines: list[str] = []
            while not isinstance(event, Finished):
                lines.append(event.line)
                history[-1]["content"] = _shown(t, lines, "")
                yield history, history, ""
                event = await anext(run_)
            history[-1]["content"] = _shown(t, lines, event.answer)
            yield history, history, ""

    demo.load(shown, None, box, api_name="chat_agent_mode")
    run.click(agent_turn, [textbox, messages, tools], [chatbot, messages, textbox], api_name="chat_agent")


def _shown(t: dict[str, str], lines: list[str], answer: str) -> str:
    """The assistant's message: the trace as a list of plain lines, then the answer (Markdown from the model, which the
    chat shows safely as it shows every answer)."""
    trace = "\n".join(f"- {plain(line)}" for line in lines)
    return f"{t['trace']}\n\n{trace}\n\n{answer}".rstrip()
