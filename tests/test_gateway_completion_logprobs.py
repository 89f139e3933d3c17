"""OpenAI's legacy logprobs and echo on /v1/completions, streamed and not, through the official openai client; echo with
max_tokens 0 scores a sentence, and its perplexity is the one ScoreText and `schulki eval` compute."""

from __future__ import annotations

import math

import grpc
import numpy as np
import openai
import pytest
from schulki.evaluation.model import EvalModel
from schulki.evaluation.perplexity import Stats, _log_softmax_parts
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc
from schulki.models.defaults import chat_model_path

from tests.gateway_stack import running_stack, stack_config

PROMPT = "Der Himmel ist"
SENTENCE = "Der Himmel ist lila."
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    config = stack_config(folder)
    config.inference.flash_attention = False  # schulki eval's reference below runs without it: the same rounding
    with running_stack(folder, services=("inference",), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    student = stack.add_user("legacy-lena", "student", ("9b",))
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=student.api_key, max_retries=0, timeout=120)


def complete(client, **options):
    options = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "seed": 1} | options
    return client.completions.create(model="schulki-chat", **options)


def test_each_answer_token_has_its_logprob_alternatives_and_offset(client):
    answer = complete(client, logprobs=3)
    choice = answer.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == answer.usage.completion_tokens
    assert "".join(lp.tokens) == choice.text
    # Without echo the offsets count from the prompt's start, as OpenAI's do.
    assert lp.text_offset[0] == len(PROMPT)
    assert [b - a for a, b in zip(lp.text_offset, lp.text_offset[1:], strict=False)] == [len(t) for t in lp.tokens[:-1]]
    for token, logprob, tops in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0
        assert len(tops) == 3
        assert max(tops.values()) >= logprob - 1e-6
        assert sum(math.exp(v) for v in tops.values()) <= 1 + 1e-5
        assert token not in tops or abs(tops[token] - logprob) < 1e-6  # the same token, the same log-probability


def test_the_stream_carries_the_same_tokens_as_the_body(client):
    whole = complete(client, logprobs=2, echo=True).choices[0]
    chunks = list(complete(client, logprobs=2, echo=True, stream=True))
    parts = [chunk.choices[0] for chunk in chunks if chunk.choices]
    assert "".join(part.text for part in parts) == whole.text
    tokens = [t for part in parts if part.logprobs for t in part.logprobs.tokens]
    offsets = [o for part in parts if part.logprobs for o in part.logprobs.text_offset]
    logprobs = [v for part in parts if part.logprobs for v in part.logprobs.token_logprobs]
    assert tokens == whole.logprobs.tokens
    assert offsets == whole.logprobs.text_offset
    assert parts[0].text == PROMPT and "".join(parts[0].logprobs.tokens) == PROMPT  # the echo comes with the prompt's scores
    # The second request reads its prompt from cached cells; llama.cpp rounds a prompt read in parts a little differently.
    assert all(abs(a - b) < 0.1 for a, b in zip(logprobs, whole.logprobs.token_logprobs, strict=True))


def test_echo_with_max_tokens_0_scores_the_sentence_as_score_text_and_schulki_eval_do(client, stack):
    answer = complete(client, prompt=SENTENCE, max_tokens=0, echo=True, logprobs=1)
    choice = answer.choices[0]
    assert choice.text == SENTENCE
    lp = choice.logprobs
    assert "".join(lp.tokens) == SENTENCE  # the model's start token is not part of the text and is left out
    assert lp.text_offset[0] == 0
    assert all(value is not None and value <= 0 for value in lp.token_logprobs)  # Gemma's start token predicts the first word
    perplexity = math.exp(-sum(lp.token_logprobs) / len(lp.token_logprobs))

    with grpc.insecure_channel(stack.servers["inference"].address) as channel:
        scored = pb_grpc.InferenceServiceStub(channel).ScoreText(pb.ScoreTextRequest(text=SENTENCE), timeout=120)
    assert [t.chosen.piece.decode() for t in scored.tokens] == lp.tokens
    assert abs(perplexity - scored.perplexity) / scored.perplexity < TOLERANCE

    with EvalModel(chat_model_path(), context=64, threads=1) as model:  # schulki eval's model and log-softmax
        tokens = model.tokenize(SENTENCE, add_bos=True)
        block = np.array(model.decode(tokens, first_output=0)[:-1], dtype=np.float32)
    top, log_sum = _log_softmax_parts(block)
    nll = top + log_sum - block[np.arange(len(block)), tokens[1:]]
    stats = Stats(count=len(nll), sum_nll=float(nll.sum(dtype=np.float64)))
    assert abs(perplexity - stats.perplexity) / stats.perplexity < TOLERANCE


def test_echo_without_logprobs_and_plain_answers_carry_none(client):
    echoed = complete(client, prompt=SENTENCE, max_tokens=0, echo=True).choices[0]
    assert echoed.text == SENTENCE and echoed.logprobs is None
    assert complete(client).choices[0].logprobs is None


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"max_tokens": 0}, "echo"),
        ({"logprobs": 2, "suffix": "}"}, "logprobs"),
    ],
)
def test_bad_logprob_options_are_refused_with_400(client, options, named):
    with pytest.raises(openai.BadRequestError) as caught:
        complete(client, **options)
    assert named in str(caught.value)
