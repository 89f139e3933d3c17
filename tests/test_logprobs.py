"""Log-probabilities from the batched engine, checked against llama-cpp-python evaluating the same model and text itself."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from schulki.config import Config
from schulki.evaluation.model import EvalModel
from schulki.evaluation.perplexity import Stats, _log_softmax_parts
from schulki.inference import build
from schulki.inference.logprobs import rows_top_and_logprob, top_and_logprob
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc
from schulki.models.defaults import chat_model_path

from tests.conftest import InProcessServer
from tests.service_support import service_fixtures

TOLERANCE = 1e-3
TEXT = "Der Himmel ist blau, und die Sonne scheint."
TOP = 5


def make_service():
    config = Config()
    config.inference.threads = 1
    config.inference.parallel_sequences = 2
    config.inference.context_length = 512
    config.inference.flash_attention = False  # the reference below runs without it: the same kernels, the same rounding
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.InferenceServiceStub)


@pytest.fixture()
def fresh():
    """A service of its own, with nothing cached: an engine that answered before reads a new text's shared start (the
    start token, the chat template, "Der Himmel ist") from cached cells, and llama.cpp's kernels round a text read in
    two parts differently from one read whole (0.05 nats here, enough to swap two close tokens), so a reference that
    reads it whole could not follow."""
    with InProcessServer([make_service()]) as running, running.channel() as channel:
        yield running, pb_grpc.InferenceServiceStub(channel)


@pytest.fixture(scope="module")
def reference():
    """The default chat model in llama-cpp-python itself, every position's logits kept."""
    from llama_cpp import Llama

    llama = Llama(str(chat_model_path(Config())), n_ctx=512, n_batch=512, n_threads=1, logits_all=True, flash_attn=False, verbose=False)
    yield llama
    llama.close()


def log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    top = row.max()
    return row - top - math.log(np.exp(row - top).sum())


def direct_rows(llama, tokens: list[int], one_by_one_from: int | None = None) -> np.ndarray:
    """Log-probabilities of every position; tokens from ``one_by_one_from`` on are decoded one per step, as the engine
    decodes generated tokens."""
    llama.reset()
    split = len(tokens) if one_by_one_from is None else one_by_one_from
    llama.eval(tokens[:split])
    for token in tokens[split:]:
        llama.eval([token])
    return np.array([log_softmax(row) for row in llama.scores[: len(tokens)]])


def assert_matches(item: pb.TokenLogprob, row: np.ndarray, token: int) -> None:
    assert item.chosen.token_id == token
    assert abs(item.chosen.logprob - row[token]) < TOLERANCE, (item.chosen.logprob, row[token])
    expected = np.argsort(-row)[:TOP]
    assert [c.token_id for c in item.alternatives] == [int(t) for t in expected]
    for choice in item.alternatives:
        assert abs(choice.logprob - row[choice.token_id]) < TOLERANCE


def test_scored_text_matches_llama_cpp(fresh, reference):
    stub = fresh[1]
    scored = stub.ScoreText(pb.ScoreTextRequest(text=TEXT, top_logprobs=TOP), timeout=120)
    tokens = reference.tokenize(TEXT.encode(), add_bos=True, special=False)
    rows = direct_rows(reference, tokens)
    assert [t.chosen.token_id for t in scored.tokens] == tokens[1:]
    assert scored.first.token_id == tokens[0]
    for i, item in enumerate(scored.tokens):
        assert_matches(item, rows[i], tokens[i + 1])  # the logits at position i predict token i + 1
    assert b"".join(t.chosen.piece for t in scored.tokens).decode() == TEXT


def test_chat_logprobs_match_llama_cpp(fresh, reference):
    server, stub = fresh
    messages = [pb.Message(role=pb.ROLE_USER, content="Wie heißt die Hauptstadt von Frankreich?")]
    request = pb.ChatRequest(messages=messages, max_tokens=6, sampling=pb.SamplingOptions(temperature=0.0), top_logprobs=TOP)
    events = list(stub.Chat(request, timeout=120))
    prompt = server.services[0].engine.chat_tokens([{"role": "user", "content": messages[0].content}])
    tokens = [e.token for e in events if e.HasField("token")]
    text = "".join(e.text for e in events if e.HasField("text"))
    assert len(tokens) == events[-1].finish.usage.completion_tokens == 6
    assert b"".join(t.chosen.piece for t in tokens).decode() == text
    generated = [t.chosen.token_id for t in tokens]
    rows = direct_rows(reference, prompt + generated, one_by_one_from=len(prompt))
    for i, item in enumerate(tokens):
        # The model's own distribution, as llama.cpp computed it, not the one after the repeat penalty (default 1.1),
        # which the sampler chain writes into the same logits buffer.
        assert_matches(item, rows[len(prompt) - 1 + i], generated[i])


def test_answers_decoded_together_each_get_their_own_rows(stub):
    """Two greedy answers in the same steps: their rows are read as one block, and each token's alternatives must be its
    own row's (greedy with no penalty takes a row's top token, so a row of the other answer would show another)."""
    questions = ["Nenne drei Farben.", "Wie viele Beine hat eine Spinne?"]
    greedy = pb.SamplingOptions(temperature=0.0, repeat_penalty=1.0)
    requests = [
        pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=q)], max_tokens=12, sampling=greedy, top_logprobs=3)
        for q in questions
    ]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda r: list(stub.Chat(r, timeout=120)), requests))
    texts = []
    for events in answers:
        tokens = [e.token for e in events if e.HasField("token")]
        assert len(tokens) == events[-1].finish.usage.completion_tokens
        for token in tokens:
            assert token.alternatives[0].token_id == token.chosen.token_id
            assert abs(token.alternatives[0].logprob - token.chosen.logprob) < 1e-6
        texts.append("".join(e.text for e in events if e.HasField("text")))
    assert texts[0] != texts[1]


def test_chat_without_logprobs_sends_no_token_events(stub):
    messages = [pb.Message(role=pb.ROLE_USER, content="Hallo!")]
    events = list(stub.Chat(pb.ChatRequest(messages=messages, max_tokens=4), timeout=120))
    assert not any(e.HasField("token") for e in events)
    logprobs_only = list(stub.Chat(pb.ChatRequest(messages=messages, max_tokens=4, logprobs=True), timeout=120))
    tokens = [e.token for e in logprobs_only if e.HasField("token")]
    assert tokens and all(len(t.alternatives) == 0 and t.chosen.logprob <= 0 for t in tokens)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_next_tokens_follow_softmax_of_logits_over_temperature(fresh, reference, temperature):
    stub = fresh[1]
    beginning = "Der Himmel ist"
    answer = stub.NextTokens(pb.NextTokensRequest(text=beginning, count=10, temperature=temperature), timeout=120)
    tokens = reference.tokenize(beginning.encode(), add_bos=True, special=False)
    reference.reset()
    reference.eval(tokens)
    logits = np.asarray(reference.scores[len(tokens) - 1], dtype=np.float64)
    expected = np.exp(log_softmax(logits / temperature))
    order = np.argsort(-expected)[:10]
    assert [t.token_id for t in answer.tokens] == [int(t) for t in order]
    for choice in answer.tokens:
        assert abs(choice.logprob - math.log(expected[choice.token_id])) < TOLERANCE
    assert answer.prompt_tokens == len(tokens)


def test_perplexity_matches_schulki_eval(fresh):
    stub = fresh[1]
    sentence = "Der Himmel ist lila."
    scored = stub.ScoreText(pb.ScoreTextRequest(text=sentence), timeout=120)
    with EvalModel(chat_model_path(Config()), context=64, threads=1) as model:
        tokens = model.tokenize(sentence, add_bos=True)
        block = np.array(model.decode(tokens, first_output=0)[:-1], dtype=np.float32)
    top, log_sum = _log_softmax_parts(block)  # schulki eval's own log-softmax, as llama-perplexity computes it
    stats = Stats()
    nll = top + log_sum - block[np.arange(len(block)), tokens[1:]]
    stats.count, stats.sum_nll = len(nll), float(nll.sum(dtype=np.float64))
    assert abs(scored.perplexity - stats.perplexity) / stats.perplexity < TOLERANCE


def test_shortcut_log_sum_matches_the_full_sum_on_a_flat_row():
    """The cut-off log-sum-exp stays within the tolerance even where the whole vocabulary counts (a nearly flat row)."""
    rng = np.random.default_rng(7)
    row = rng.normal(0, 0.5, 262144).astype(np.float32)
    logprob, top = top_and_logprob(row, 3, 5)
    full = log_softmax(row)
    assert abs(logprob - full[3]) < 1e-5
    assert [t for t, _ in top] == [int(t) for t in np.argsort(-full)[:5]]
    flat = top_and_logprob(np.zeros(50, dtype=np.float32), 0, 20, temperature=5.0)
    assert len(flat[1]) == 20 and abs(flat[0] - math.log(1 / 50)) < 1e-6


def test_rows_read_together_give_what_each_row_gives_alone():
    rng = np.random.default_rng(3)
    block = rng.normal(0, 2, (4, 262144)).astype(np.float32)
    block[2] = 0.0  # every token as likely: the top-k must widen its gap for this row alone
    block[3, 11] = 30.0  # one token far ahead of the rest
    chosen, tops = [1, 2, 3, 11], [5, 0, 20, 3]
    together = rows_top_and_logprob(block, chosen, tops, np.empty(block.size, dtype=np.float32))
    for row, token, top, (logprob, pairs) in zip(block, chosen, tops, together, strict=True):
        full = log_softmax(row)
        assert abs(logprob - full[token]) < 1e-5
        assert len(pairs) == top
        assert all(abs(value - full[t]) < 1e-5 for t, value in pairs)
        assert sorted(full[[t for t, _ in pairs]], reverse=True) == sorted(np.sort(full)[::-1][:top], reverse=True)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.ScoreText(pb.ScoreTextRequest(text="   ")), "leer"),
        (lambda s: s.ScoreText(pb.ScoreTextRequest(text="Hallo Welt", top_logprobs=21)), "top_logprobs"),
        (lambda s: s.NextTokens(pb.NextTokensRequest(text="Hallo", count=0)), "count"),
        (lambda s: s.NextTokens(pb.NextTokensRequest(text="Hallo", count=5, temperature=0.0)), "temperature"),
        (lambda s: s.NextTokens(pb.NextTokensRequest(text="Hallo", count=5, temperature=9.0)), "temperature"),
        (
            lambda s: list(s.Chat(pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="Hi")], top_logprobs=-1))),
            "top_logprobs",
        ),
    ],
)
def test_bad_requests_are_refused(stub, call, message):
    with pytest.raises(grpc.RpcError) as caught:
        call(stub)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
