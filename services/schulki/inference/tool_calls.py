"""Tool calling: the request's tools shown to the model, its answer held to the call format, the calls read back.

Two formats, chosen per model when it loads (``ToolFormat``):

- The model's own chat template, where it renders tools (llama.cpp's
  ``--jinja``: the template gets ``tools``, assistant messages with
  ``tool_calls`` and ``tool`` messages as they are). Templates that write calls
  as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` (Hermes, Qwen)
  keep that wrapping; any other gets the JSON below.
- The fallback for a template without tools (the default Gemma 3 270M): the
  tools are described in the system part, earlier calls are written as the
  JSON the model is asked for, tool results as user turns, and a call is the
  JSON object ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``.

A grammar (grammar.py) holds the answer to that format: for ``required`` and a
named function from the first token, so the arguments always fit the tool's
schema; for ``auto`` the grammar is a choice at the first character between a
call (``{`` or ``<tool_call>``) and text that starts with anything else, after
which the text runs free. docs/decisions.md says why not a lazy trigger.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schulki.inference.grammar import schema_to_gbnf
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.runtime.errors import InvalidInput

MAX_TOOLS = 64
"""Most tools one request may offer; each adds its schema to the prompt and the grammar."""
MAX_PARALLEL_CALLS = 8
"""Most calls one answer may hold: a small model under a grammar would otherwise add calls until max_tokens."""
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PROBE_TOOL = "schulki_probe_tool"
"""A tool name no template writes unless it renders the tools it is given."""

FALLBACK_INSTRUCTIONS = (
    "You can call these tools (functions):\n{tools}\n\n"
    "To call tools, answer with nothing but one JSON object of this form: "
    '{{"tool_calls": [{{"name": "<tool name>", "arguments": {{<arguments as the tool\'s parameters describe>}}}}]}}\n'
    "Otherwise answer in plain text. A tool's result comes back in a message that begins with 'Tool result'."
)


@dataclass(frozen=True)
class ToolFormat:
    """How one model's prompt shows tools and how its calls are written."""

    native: bool
    """The chat template renders tools and tool messages itself."""
    hermes: bool = False
    """Calls are wrapped in <tool_call> tags (only with a native template that writes them)."""


def tool_format_of(render: Any, template: str) -> ToolFormat:
    """The format of a chat template: native where rendering a probe tool writes its name into the prompt.
    ``render``: llama-cpp-python's Jinja2 formatter."""
    try:
        prompt = render(messages=[{"role": "user", "content": "Hallo"}], tools=[_tool_json(PROBE_TOOL, "", {})]).prompt
    except Exception:  # a template that raises on tools does not take them
        return ToolFormat(native=False)
    native = PROBE_TOOL in prompt
    return ToolFormat(native=native, hermes=native and HERMES_OPEN in template)


@dataclass
class Tools:
    """The checked tool part of one chat request."""

    tools: list[pb.Tool]
    choice: int
    """pb.TOOL_CHOICE_AUTO, NONE, REQUIRED or FUNCTION (UNSPECIFIED is read as AUTO)."""
    function: str = ""
    parallel: bool = True

    @property
    def active(self) -> bool:
        """The answer may hold calls (tools offered and the choice is not none)."""
        return bool(self.tools) and self.choice != pb.TOOL_CHOICE_NONE

    @property
    def forced(self) -> bool:
        return self.choice in (pb.TOOL_CHOICE_REQUIRED, pb.TOOL_CHOICE_FUNCTION)


def checked_tools(request: pb.ChatRequest) -> Tools:
    """The request's tools and tool choice; InvalidInput naming the problem (a bad name, a schema that cannot be a
    grammar, a choice that names no offered tool)."""
    choice = request.tool_choice or pb.TOOL_CHOICE_AUTO
    if len(request.tools) > MAX_TOOLS:
        raise InvalidInput(f"Höchstens {MAX_TOOLS} Werkzeuge je Anfrage. (At most {MAX_TOOLS} tools, not {len(request.tools)}.)")
    names: set[str] = set()
    for tool in request.tools:
        if not TOOL_NAME.match(tool.name):
            raise InvalidInput(
                f"Werkzeugname {tool.name[:80]!r} ist ungültig: erlaubt sind Buchstaben, Ziffern, _ und -, höchstens 64 Zeichen. "
                "(tools: invalid function name)"
            )
        if tool.name in names:
            raise InvalidInput(f"Das Werkzeug {tool.name} ist doppelt angegeben. (tools: duplicate function name {tool.name})")
        names.add(tool.name)
        try:
            schema_to_gbnf(parameters_text(tool))
        except InvalidInput as error:
            raise InvalidInput(f"Werkzeug {tool.name}: {error} (tools: the parameters of {tool.name})") from None
        if not isinstance(json.loads(parameters_text(tool)), dict) or json.loads(parameters_text(tool)).get("type", "object") != "object":
            raise InvalidInput(
                f"Werkzeug {tool.name}: die Parameter müssen ein Objekt beschreiben. (tools: parameters must be an object schema)"
            )
    if choice in (pb.TOOL_CHOICE_REQUIRED, pb.TOOL_CHOICE_FUNCTION) and not request.tools:
        raise InvalidInput("tool_choice verlangt einen Werkzeugaufruf, aber es sind keine Werkzeuge angegeben. (tool_choice needs tools.)")
    if choice == pb.TOOL_CHOICE_FUNCTION and request.tool_choice_function not in names:
        raise InvalidInput(
            f"tool_choice nennt das Werkzeug {request.tool_choice_function[:80]!r}, das nicht unter tools steht. "
            "(tool_choice names a function that is not among the tools.)"
        )
    parallel = request.parallel_tool_calls if request.HasField("parallel_tool_calls") else True
    tools = Tools(list(request.tools), choice, request.tool_choice_function, parallel)
    if tools.active and request.HasField("json_schema"):
        raise InvalidInput("response_format und Werkzeugaufrufe gehen nicht zusammen. (response_format cannot be combined with tools.)")
    if tools.active and (request.logprobs or request.HasField("top_logprobs")):
        raise InvalidInput("logprobs und Werkzeugaufrufe gehen nicht zusammen. (logprobs cannot be combined with tools.)")
    return tools


def parameters_text(tool: pb.Tool) -> str:
    return tool.parameters or '{"type": "object", "properties": {}}'


def _tool_json(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A tool in OpenAI's shape, as chat templates read it."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def template_tools(tools: Tools) -> list[dict[str, Any]] | None:
    """The tools for a native chat template; None when the model is not to see them (none, or no tools)."""
    if not tools.tools or tools.choice == pb.TOOL_CHOICE_NONE:
        return None
    return [_tool_json(t.name, t.description, json.loads(parameters_text(t))) for t in tools.tools]


# -- the conversation --------------------------------------------------------------------------------------------------


ROLES = {pb.ROLE_SYSTEM: "system", pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant", pb.ROLE_TOOL: "tool"}


def _arguments(call: pb.ToolCall) -> Any:
    try:
        return json.loads(call.arguments or "{}")
    except ValueError:
        raise InvalidInput(
            f"Die Argumente des Aufrufs {call.id[:40]} sind kein gültiges JSON. (tool_calls: arguments are not JSON)"
        ) from None


def conversation(messages: Sequence[pb.Message], tools: Tools | None, fmt: ToolFormat) -> list[dict[str, Any]]:
    """The chat template's input: plain messages stay {role, content}; calls and tool results are written natively
    or in the fallback format; the fallback describes the tools in the system part. InvalidInput for an unknown role,
    or a tool message whose tool_call_id names no earlier call."""
    if not messages:
        raise InvalidInput("Die Nachricht ist leer. (The conversation has no messages.)")
    calls: dict[str, str] = {}  # id -> tool name, of the calls made so far
    result: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = ROLES.get(m.role)
        if role is None:
            raise InvalidInput(
                f"Nachricht {i + 1} hat eine unbekannte Rolle ({m.role}); erlaubt sind system, user, assistant und tool. (unknown role)"
            )
        if m.tool_calls and role != "assistant":
            raise InvalidInput(f"Nachricht {i + 1}: nur assistant-Nachrichten haben tool_calls. (tool_calls on a {role} message)")
        if role == "tool":
            _add_tool_result(result, i, m, calls, fmt)
            continue
        calls.update((call.id, call.name) for call in m.tool_calls)
        result.append(_message(role, m, fmt))
    if not any(str(m.get("content", "")).strip() or m.get("tool_calls") for m in result):
        raise InvalidInput("Die Nachricht ist leer. (All messages are empty.)")
    if tools is not None and not fmt.native and (shown := template_tools(tools)):
        described = FALLBACK_INSTRUCTIONS.format(tools=json.dumps([t["function"] for t in shown], ensure_ascii=False))
        if result[0]["role"] == "system":
            result[0] = {"role": "system", "content": f"{result[0]['content']}\n\n{described}"}
        else:
            result.insert(0, {"role": "system", "content": described})
    return result


def _message(role: str, m: pb.Message, fmt: ToolFormat) -> dict[str, Any]:
    """A system, user or assistant message; an assistant's calls written natively or as the fallback's JSON."""
    if not m.tool_calls:
        return {"role": role, "content": m.content}
    if fmt.native:
        written = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c)}} for c in m.tool_calls]
        return {"role": "assistant", "content": m.content, "tool_calls": written}
    text = _fallback_call_text([(c.name, _arguments(c)) for c in m.tool_calls])
    return {"role": "assistant", "content": f"{m.content}\n{text}" if m.content.strip() else text}


def _add_tool_result(result: list[dict[str, Any]], i: int, m: pb.Message, calls: dict[str, str], fmt: ToolFormat) -> None:
    """A tool message: as it is for a native template; for the fallback a user turn (results of parallel calls share one)."""
    if m.tool_call_id not in calls:
        raise InvalidInput(
            f"Nachricht {i + 1}: tool_call_id {m.tool_call_id[:40]!r} nennt keinen Aufruf einer früheren assistant-Nachricht. "
            "(a tool message's tool_call_id must name a call of an earlier assistant message)"
        )
    name = m.name or calls[m.tool_call_id]
    if fmt.native:
        result.append({"role": "tool", "content": m.content, "tool_call_id": m.tool_call_id, "name": name})
        return
    text = f"Tool result of {name} ({m.tool_call_id}):\n{m.content}"
    if result and result[-1]["role"] == "user" and result[-1]["content"].startswith("Tool result of "):
        result[-1] = {"role": "user", "content": f"{result[-1]['content']}\n\n{text}"}
    else:
        result.append({"role": "user", "content": text})


def _fallback_call_text(calls: list[tuple[str, Any]]) -> str:
    return json.dumps({"tool_calls": [{"name": name, "arguments": arguments} for name, arguments in calls]}, ensure_ascii=False)


# -- the grammar -------------------------------------------------------------------------------------------------------


def _call_schema(tool: pb.Tool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": json.loads(parameters_text(tool))},
        "required": ["name", "arguments"],
    }


def call_gbnf(tools: Tools, fmt: ToolFormat) -> str | None:
    """The grammar an answer with tools must follow; None for free text (no tools, or none)."""
    if not tools.active:
        return None
    offered = [t for t in tools.tools if tools.choice != pb.TOOL_CHOICE_FUNCTION or t.name == tools.function]
    most = MAX_PARALLEL_CALLS if tools.parallel and tools.choice != pb.TOOL_CHOICE_FUNCTION else 1
    item: dict[str, Any] = _call_schema(offered[0]) if len(offered) == 1 else {"anyOf": [_call_schema(t) for t in offered]}
    if fmt.hermes:
        one = _renamed_root(schema_to_gbnf(json.dumps(item, ensure_ascii=False)), "call")
        tagged = f'"{HERMES_OPEN}\\n" call "\\n{HERMES_CLOSE}"'
        calls = f"calls ::= {tagged}" + (f' ("\\n" {tagged}){{0,{most - 1}}}' if most > 1 else "")
        opener = "<"
    else:
        schema = {
            "type": "object",
            "properties": {"tool_calls": {"type": "array", "items": item, "minItems": 1, "maxItems": most}},
            "required": ["tool_calls"],
        }
        one = _renamed_root(schema_to_gbnf(json.dumps(schema, ensure_ascii=False)), "calls")
        calls = ""
        opener = "{"
    root = "root ::= calls" if tools.forced else f"root ::= calls | free-text\nfree-text ::= [^{opener}] free-char*\nfree-char ::= [^\\x00]"
    return "\n".join(line for line in (root, calls, one) if line)


def _renamed_root(gbnf: str, name: str) -> str:
    return re.sub(r"^root ::=", f"{name} ::=", gbnf, count=1, flags=re.MULTILINE)


def call_opener(fmt: ToolFormat) -> str:
    """The first character of a call in the answer; under the auto grammar a text answer never starts with it."""
    return "<" if fmt.hermes else "{"


# -- the answer --------------------------------------------------------------------------------------------------------


def parse_calls(text: str, fmt: ToolFormat) -> list[pb.ToolCall] | None:
    """The calls an answer holds, each with a new id; None when it holds none (the text is the answer)."""
    found: Any
    try:
        if fmt.hermes:
            found = [json.loads(part) for part in re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", text, flags=re.DOTALL)]
        else:
            body = json.loads(text.strip())
            found = body.get("tool_calls") if isinstance(body, dict) else None
    except ValueError:
        return None
    if not found or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in found):
        return None
    return [
        pb.ToolCall(
            id=f"call_{secrets.token_hex(12)}",
            name=c["name"],
            arguments=json.dumps(c.get("arguments", c.get("parameters", {})), ensure_ascii=False),
        )
        for c in found
    ]


class CallWatcher:
    """Sits between a generation and the stream of an answer that may call tools: text goes on at once once it is
    known to be text; a call is held back whole and read when the answer ends."""

    def __init__(self, tools: Tools, fmt: ToolFormat):
        self._fmt = fmt
        self._opener = call_opener(fmt)
        self._holding = tools.forced  # a forced answer is a call from its first token
        self._decided = tools.forced
        self._held: list[str] = []

    def push(self, text: str) -> str:
        """A piece of the answer in; the text to send on now."""
        if self._decided and not self._holding:
            return text
        self._held.append(text)
        if not self._decided and (joined := "".join(self._held)):
            # The auto grammar chose at the first character: the call's opener, or text that starts otherwise.
            self._decided, self._holding = True, joined[0] == self._opener
            if not self._holding:
                self._held.clear()
                return joined
        return ""

    def end(self, finish_reason: str) -> tuple[list[pb.ToolCall], str]:
        """The calls of an answer that ended (none if it was text or was cut off by max_tokens) and the text still to send."""
        held = "".join(self._held)
        if not self._holding:
            return [], held
        calls = parse_calls(held, self._fmt) if finish_reason == "stop" else None
        return (calls, "") if calls else ([], held)
