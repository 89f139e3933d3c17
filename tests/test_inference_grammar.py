"""Constrained output in the inference service: JSON-schema grammars per sequence, beside free answers in one batch."""

from __future__ import annotations

import json
import threading
import time

import grpc
import jsonschema
import pytest
from schulki.config import Config
from schulki.inference import build
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc

from tests.json_schemas import PUPIL
from tests.service_support import service_fixtures


def make_service():
    config = Config()
    config.inference.threads = 1
    config.inference.parallel_sequences = 4
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.InferenceServiceStub)


def ask(text: str, schema: str | None = None, max_tokens: int = 48, temperature: float = 0.0) -> pb.ChatRequest:
    request = pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content=text)], max_tokens=max_tokens, sampling=pb.SamplingOptions(temperature=temperature)
    )
    if schema is not None:
        request.json_schema = schema
    return request


class Answer(threading.Thread):
    """One Chat call on its own thread: its text, the times its pieces came, its finish."""

    def __init__(self, stub, request: pb.ChatRequest):
        super().__init__(daemon=True)
        self.stub, self.request = stub, request
        self.times: list[float] = []
        self.text = ""
        self.finish: pb.ChatFinish | None = None

    def run(self) -> None:
        for response in self.stub.Chat(self.request, timeout=600):
            if response.HasField("finish"):
                self.finish = response.finish
            else:
                self.times.append(time.monotonic())
                self.text += response.text


def test_answers_with_and_without_a_grammar_run_side_by_side_in_one_batch(server, stub):
    schema = json.dumps(PUPIL)
    compiled_before = server.service.engine._grammars.compiled
    answers = [Answer(stub, ask(f"Schüler Nummer {i} als JSON.", schema)) for i in range(2)]
    answers += [Answer(stub, ask(f"Erzähl etwas über die Zahl {i}.", max_tokens=24)) for i in range(2)]
    for i, answer in enumerate(answers):
        answer.request.user = f"schueler-{i}"  # four users, so the per-user cap lets all four run at once
        answer.start()
    for answer in answers:
        answer.join(600)
        assert answer.finish is not None, answer.request
    for answer in answers[:2]:
        jsonschema.validate(json.loads(answer.text), PUPIL)
        assert answer.finish.reason == pb.FINISH_REASON_STOP  # the grammar ended the object, and with it the answer
    assert all(not a.text.lstrip().startswith("{") for a in answers[2:]), [a.text for a in answers[2:]]
    # the free and the constrained answers were decoded in the same steps, not one after the other
    assert answers[2].times[0] < answers[0].times[-1] and answers[0].times[0] < answers[2].times[-1]
    # one schema, compiled once for both answers
    assert server.service.engine._grammars.compiled == compiled_before + 1


def test_a_schema_sent_by_many_at_once_is_compiled_once(server):
    from schulki.inference.grammar import Grammars

    grammars = Grammars(server.service.engine._grammars._vocab)  # a cache of its own, empty
    schema = json.dumps({"type": "object", "properties": {"klasse": {"type": "string", "maxLength": 3}}})
    together = threading.Barrier(8)

    def student() -> None:
        together.wait()
        grammars.compile(schema)

    threads = [threading.Thread(target=student) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert grammars.compiled == 1


def test_json_object_gives_an_object_that_parses(stub):
    text = "".join(r.text for r in stub.Chat(ask("Nenne drei Farben.", '{"type": "object"}', max_tokens=64)))
    assert isinstance(json.loads(text), dict), text


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ('{"type": "nonsense"}', "Unrecognized schema"),
        ('{"type": "string", "pattern": "(("}', "Pattern must start"),
        ("{not json", "kein gültiges JSON"),
        ("[1, 2]", "JSON-Objekt"),
        ('{"$ref": "#/definitions/missing"}', "Error resolving ref"),
    ],
)
def test_a_schema_that_cannot_be_compiled_is_refused_naming_the_problem(stub, schema, problem):
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Chat(ask("Hallo", schema)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and problem in caught.value.details(), caught.value.details()


def test_sampling_options_out_of_range_are_refused(stub):
    for sampling, name in [
        (pb.SamplingOptions(logit_bias={10**7: 1.0}), "logit_bias"),
        (pb.SamplingOptions(logit_bias={1: 101.0}), "logit_bias"),
        (pb.SamplingOptions(presence_penalty=3.0), "presence_penalty"),
        (pb.SamplingOptions(frequency_penalty=-2.5), "frequency_penalty"),
        (pb.SamplingOptions(min_p=1.5), "min_p"),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Chat(pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="Hallo")], sampling=sampling)))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and name in caught.value.details()


def test_a_banned_token_never_appears(server, stub):
    free = "".join(r.text for r in stub.Chat(ask("Was ist die Hauptstadt von Frankreich?", max_tokens=8)))
    first = server.service.engine.tokens_of(free)[0]
    request = ask("Was ist die Hauptstadt von Frankreich?", max_tokens=8)
    request.sampling.logit_bias[first] = -100.0
    banned = "".join(r.text for r in stub.Chat(request))
    assert server.service.engine.tokens_of(banned)[:1] != [first], (free, banned)
