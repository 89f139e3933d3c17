"""The sampling and output fields of /v1/chat/completions, and the OpenAI fields taken only at their harmless value.

OpenAI's chat request has some forty fields; a client that sends one and gets
an answer believes it was honoured. So each field either works or is refused
with a 400 naming it (``schemas.ChatCompletionRequest`` lists them all):

- sampling (``top_p``, ``presence_penalty``, ``frequency_penalty``,
  ``logit_bias``, ``seed``, ``stop``, llama.cpp's ``top_k``, ``min_p``,
  ``repeat_penalty``) goes to the inference service's sampler chain;
- ``response_format`` ``json_object`` and ``json_schema`` become a JSON schema
  the service turns into a grammar, so the answer always parses and, for
  ``json_schema``, validates (``strict`` or not: the grammar is always strict);
- ``tools``, ``tool_choice`` and ``parallel_tool_calls`` let the answer call
  functions (chat_tools.py; with a call, ``response_format`` and ``logprobs``
  are refused);
- ``logprobs`` and ``top_logprobs`` give each answer token's log-probability and its alternatives;
- ``store: false``, ``service_tier`` ``auto``/``default``
  and ``modalities: ["text"]`` ask for what schulki does anyway and are taken;
  any other value is refused;
- ``user``, ``safety_identifier`` and ``prompt_cache_key`` are taken and have
  nothing to do: the gateway sends its own pseudonym of the account, and the
  prefix cache works without a key.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo
from pydantic_core import PydanticCustomError

SAMPLING_FIELDS = ("top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")
"""Fields of the chat request that are SamplingOptions of the same name for the inference service."""
OUTPUT_FIELDS = (*SAMPLING_FIELDS, "logit_bias", "response_format", "tools", "tool_choice", "parallel_tool_calls")
"""Every field ``ChatCompletionRequest.inference_options`` hands to the inference service (beside temperature, seed and stop)."""

JSON_OBJECT_SCHEMA = '{"type": "object"}'
"""The schema of ``response_format: json_object``: any JSON object."""


def _unsupported(name: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError("unsupported_parameter", f"schulki does not support {name}={json.dumps(value)[:80]}; leave it out.")


def _refused(message: str) -> PydanticCustomError:
    return PydanticCustomError("refused", message)


def _only(*allowed: Any) -> AfterValidator:
    def check(value: Any, info: ValidationInfo) -> Any:
        if value is not None and value not in allowed:
            raise _unsupported(str(info.field_name), value)
        return value

    return AfterValidator(check)


OnlyFalse = Annotated[Any, _only(False)]
DefaultTier = Annotated[Any, _only("auto", "default")]
TextOnly = Annotated[Any, _only(["text"])]


def not_here(value: Any, info: ValidationInfo) -> Any:
    """A field a route that takes a chat completion's body does not pass on: refused by name, never dropped."""
    if value is not None:
        raise PydanticCustomError("unsupported_parameter", f"{info.field_name} is not supported here; leave it out.")
    return value


def _logit_bias(value: Any) -> dict[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _refused("logit_bias must be an object of token ids and biases from -100 to 100.")
    bias: dict[int, float] = {}
    for token, number in value.items():
        if not str(token).isdigit():
            raise _refused(f"logit_bias: {str(token)[:40]!r} is not a token id.")
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not -100 <= number <= 100:
            raise _refused(f"logit_bias for token {token} must be a number from -100 to 100.")
        bias[int(token)] = float(number)
    return bias


LogitBias = Annotated[Any, AfterValidator(_logit_bias)]


def _response_format(value: Any) -> str | None:
    """The JSON schema's text the answer must follow, or None for free text."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT_SCHEMA
    if kind != "json_schema":
        raise _refused("response_format.type must be text, json_object or json_schema.")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise _refused("response_format.json_schema must be an object with name and schema.")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise _refused("response_format.json_schema.schema must be a JSON schema object.")
    if not isinstance(spec.get("strict", False), (bool, type(None))):
        raise _refused("response_format.json_schema.strict must be true or false.")
    return json.dumps(schema, ensure_ascii=False)


ResponseFormat = Annotated[Any, AfterValidator(_response_format)]
