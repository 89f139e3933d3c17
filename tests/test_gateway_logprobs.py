"""OpenAI's logprobs and top_logprobs on /v1/chat/completions, streamed and not, through the official openai client."""

from __future__ import annotations

import math

import openai
import pytest

from tests.gateway_stack import running_stack, stack_config

QUESTION = [{"role": "user", "content": "Nenne drei Farben."}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    with running_stack(folder, services=("inference",), config=stack_config(folder)) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    student = stack.add_user("logprob-lena", "student", ("9b",))
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=student.api_key, max_retries=0, timeout=120)


def ask(client, **options):
    return client.chat.completions.create(model="schulki-chat", messages=QUESTION, max_tokens=8, temperature=0, seed=1, **options)


def test_an_answer_carries_each_tokens_logprob_and_its_alternatives(client):
    answer = ask(client, logprobs=True, top_logprobs=3)
    choice = answer.choices[0]
    tokens = choice.logprobs.content
    assert len(tokens) == answer.usage.completion_tokens
    assert b"".join(bytes(t.bytes) for t in tokens).decode() == choice.message.content
    for token in tokens:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 3
        values = [alternative.logprob for alternative in token.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-5
        assert bytes(token.top_logprobs[0].bytes).decode(errors="replace") == token.top_logprobs[0].token


def test_the_stream_carries_the_same_logprobs_as_the_answer(client):
    whole = ask(client, logprobs=True, top_logprobs=2).choices[0]
    streamed = list(ask(client, logprobs=True, top_logprobs=2, stream=True))
    tokens = [t for chunk in streamed if chunk.choices and chunk.choices[0].logprobs for t in chunk.choices[0].logprobs.content]
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == whole.message.content
    assert [t.token for t in tokens] == [t.token for t in whole.logprobs.content]
    for mine, theirs in zip(tokens, whole.logprobs.content, strict=True):
        # The second request reads its prompt from the cells the first left behind, and llama.cpp rounds a prompt read
        # in parts differently from one read whole (up to 0.05 nats seen): the exact match is tests/test_logprobs.py's.
        assert abs(mine.logprob - theirs.logprob) < 0.1
        assert [a.token for a in mine.top_logprobs] == [a.token for a in theirs.top_logprobs]


def test_logprobs_without_alternatives_and_none_when_not_asked(client):
    plain = ask(client).choices[0]
    assert plain.logprobs is None
    only = ask(client, logprobs=True).choices[0]
    assert only.logprobs.content and all(t.top_logprobs == [] for t in only.logprobs.content)


@pytest.mark.parametrize(
    ("options", "named"),
    [({"logprobs": True, "top_logprobs": 21}, "top_logprobs"), ({"top_logprobs": 2}, "top_logprobs"), ({"logprobs": "ja"}, "logprobs")],
)
def test_bad_logprob_options_are_refused_with_400(client, options, named):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, **options)
    assert named in str(caught.value)
