"""The tool fields of /v1/chat/completions in OpenAI's shape, checked and turned into the inference service's.

``tools`` (functions only), ``tool_choice`` (``auto``, ``none``, ``required``
or ``{"type": "function", "function": {"name": ...}}``) and
``parallel_tool_calls`` go to the inference service, which shows the tools to
the model and holds a forced answer to a grammar of the call (inference/tool_calls.py).
What can be checked without the model is refused here with a 400 naming the
field: a tool that is not a function, a bad name, parameters that are not an
object, a tool_choice naming no offered tool, a tool message whose
tool_call_id names no earlier call. A schema the grammar compiler cannot take
is refused by the inference service (400 with its reason).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from schulki.inference.v1 import inference_service_pb2 as inference_pb

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 64
CHOICES = {"auto": inference_pb.TOOL_CHOICE_AUTO, "none": inference_pb.TOOL_CHOICE_NONE, "required": inference_pb.TOOL_CHOICE_REQUIRED}


def _refused(message: str) -> PydanticCustomError:
    return PydanticCustomError("refused", message)


def _tools(value: Any) -> list[inference_pb.Tool] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise _refused(f"tools must be a list of at most {MAX_TOOLS} functions.")
    tools, names = [], set()
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise _refused(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}; schulki offers function tools only.")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _refused(f"tools[{i}].function.name must be 1 to 64 letters, digits, _ or -.")
        if name in names:
            raise _refused(f"tools[{i}].function.name {name!r} is given twice.")
        names.add(name)
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise _refused(f"tools[{i}].function.parameters of {name!r} must be a JSON schema of an object.")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise _refused(f"tools[{i}].function.description must be a text.")
        tools.append(inference_pb.Tool(name=name, description=description, parameters=json.dumps(parameters, ensure_ascii=False)))
    return tools


def _tool_choice(value: Any) -> tuple[int, str] | None:
    """The choice as the inference service's enum and the named function ("" unless one is named)."""
    if value is None:
        return None
    if isinstance(value, str) and value in CHOICES:
        return CHOICES[value], ""
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(function, dict) and isinstance(function.get("name"), str):
        return inference_pb.TOOL_CHOICE_FUNCTION, function["name"]
    raise _refused("tool_choice must be auto, none, required or {'type': 'function', 'function': {'name': ...}}.")


Tools = Annotated[Any, AfterValidator(_tools)]
ToolChoice = Annotated[Any, AfterValidator(_tool_choice)]


def check_choice(tools: list[inference_pb.Tool] | None, choice: tuple[int, str] | None) -> None:
    """A choice that asks for a call needs tools, and a named function must be one of them."""
    if choice is None or choice[0] in (inference_pb.TOOL_CHOICE_AUTO, inference_pb.TOOL_CHOICE_NONE):
        return
    names = [tool.name for tool in tools or []]
    if not names:
        raise _refused("tool_choice asks for a tool call, but no tools are given.")
    if choice[0] == inference_pb.TOOL_CHOICE_FUNCTION and choice[1] not in names:
        raise _refused(f"tool_choice names the function {choice[1][:80]!r}, which is not among the tools ({', '.join(names)}).")


def check_tool_messages(messages: list[Any]) -> None:
    """Every tool message answers a call of an earlier assistant message (``messages`` are ChatMessage)."""
    calls: set[str] = set()
    for i, message in enumerate(messages):
        if message.role == "tool":
            if not message.tool_call_id or message.tool_call_id not in calls:
                raise _refused(
                    f"messages[{i}]: tool_call_id {str(message.tool_call_id)[:40]!r} names no tool call of an earlier assistant message."
                )
        elif message.tool_calls:
            if message.role != "assistant":
                raise _refused(f"messages[{i}]: only assistant messages have tool_calls.")
            calls.update(call.id for call in message.tool_calls)
