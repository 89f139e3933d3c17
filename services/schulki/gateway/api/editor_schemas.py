"""Typed bodies of the editor routes: OpenAI's legacy ``/v1/completions`` and llama.cpp's ``/infill`` (as ``/v1/infill``).

Editors (Continue, llama.vscode, llama.vim) complete code while a student
types: a raw prompt continued, or the gap between the text before and after
the cursor filled by a code model with fill-in-the-middle tokens. Fields
schulki does not know are accepted and their names logged (``OpenAIRequest``);
OpenAI fields schulki cannot honour are refused by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from schulki.gateway.api.responses import Usage, omitted
from schulki.gateway.api.schemas import Number, OpenAIRequest, refused

MAX_EXTRA_FILES = 256
"""Most extra files one /v1/infill request may carry (llama.vim's ring buffer sends 16 by default)."""


def _one_answer(name: str, value: int | None) -> int | None:
    if (value or 1) != 1:
        raise refused(f"schulki gives one completion per request; {name} must be 1.")
    return value


class CompletionRequest(OpenAIRequest):
    """POST /v1/completions: a prompt continued as it is (no chat template), or with ``suffix`` the gap filled."""

    model: str = Field(min_length=1)
    prompt: str | list[str]
    suffix: str | None = None
    max_tokens: Annotated[int | None, Number, Field(ge=0, le=1 << 20)] = None
    """0 only with ``echo``: the prompt alone comes back (with ``logprobs`` scored: the perplexity of a text)."""
    temperature: Annotated[float | None, Number, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Number, Field(gt=0, le=1)] = None
    seed: Annotated[int | None, Number, Field(ge=0, le=2**32 - 1)] = None
    stop: str | list[str] | None = None
    echo: bool | None = False
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    n: Annotated[int | None, Number] = None
    best_of: Annotated[int | None, Number] = None
    logprobs: Annotated[int | None, Number, Field(ge=0, le=20)] = None
    """Each token's log-probability and this many alternatives (OpenAI allows 5, schulki 20, as chat's top_logprobs)."""
    presence_penalty: Annotated[float | None, Number] = None
    frequency_penalty: Annotated[float | None, Number] = None
    logit_bias: dict[str, Any] | None = None
    user: str | None = None
    """OpenAI's end-user id: schulki knows the user from the API key and does not need it."""

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise refused("schulki completes one prompt per request: send prompt as one string.")
        return prompt

    @field_validator("n", "best_of")
    @classmethod
    def _single(cls, value: int | None, info: Any) -> int | None:
        return _one_answer(info.field_name, value)

    @model_validator(mode="after")
    def _nothing_to_answer_needs_echo(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise PydanticCustomError("invalid_value", "max_tokens 0 needs echo: without it the answer would be empty.")
        return self

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None, info: Any) -> float | None:
        if value:
            raise refused(f"schulki does not support {info.field_name} on /v1/completions; leave it out or send 0.")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value:
            raise refused("schulki does not support logit_bias on /v1/completions; leave it out.")
        return value

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ExtraChunk(BaseModel):
    """One extra file of an /infill request, as llama.vscode and llama.vim send it."""

    text: str
    filename: str = "tmp"


class InfillRequest(OpenAIRequest):
    """POST /v1/infill: llama.cpp server's /infill. ``n_predict`` 0 only reads the prompt into the prefix cache (editors
    send it ahead of the next keystroke); -1 or none gives the gateway's longest answer. Its other sampling fields
    (``samplers``, ``cache_prompt``, ``t_max_*``, ...) are logged and left aside: the cache is always on."""

    model: str | None = Field(default=None, min_length=1)
    input_prefix: str
    input_suffix: str
    input_extra: Annotated[list[ExtraChunk], Field(max_length=MAX_EXTRA_FILES)] = Field(default_factory=list)
    prompt: str = ""
    n_predict: Annotated[int | None, Number, Field(ge=-1, le=1 << 20)] = None
    max_tokens: Annotated[int | None, Number, Field(ge=1, le=1 << 20)] = None
    temperature: Annotated[float | None, Number, Field(ge=0, le=2)] = None
    top_k: Annotated[int | None, Number, Field(ge=0)] = None
    top_p: Annotated[float | None, Number, Field(gt=0, le=1)] = None
    seed: Annotated[int | None, Number, Field(ge=0, le=2**32 - 1)] = None
    stop: list[str] | None = None
    stream: bool | None = False


# -- answers -----------------------------------------------------------------------------------------------------------


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy log-probabilities: per token its text, log-probability (None for a text's first token where
    nothing predicts it), the most likely tokens at its place, and where it starts in the choice's text (characters;
    without ``echo`` counted from the prompt's start, as OpenAI does)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class TextCompletion(BaseModel):
    """The answer of /v1/completions, and each event of its stream (the last, with ``stream_options.include_usage``, has
    no choices, only usage)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = omitted()


class InfillTimings(BaseModel):
    """As llama-server reports them, measured at the gateway: prompt_ms until the first piece arrived, predicted_ms after."""

    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float


class InfillResult(BaseModel):
    """The answer of /v1/infill in llama-server's shape: the middle as ``content``; streamed, one event per piece with
    ``stop`` false and a last one with ``stop`` true and the counts."""

    index: int = 0
    content: str
    stop: bool
    model: str
    tokens_predicted: int | None = omitted()
    tokens_evaluated: int | None = omitted()
    stop_type: Literal["eos", "limit"] | None = omitted()
    """"eos": the model ended the middle or a stop string was reached; "limit": n_predict was reached."""
    timings: InfillTimings | None = omitted()
