"""OpenAI's legacy ``logprobs`` of /v1/completions, gathered from the inference service's token events.

The legacy shape is four parallel lists (token texts, their log-probabilities,
a dict of alternatives each, and where each token starts in the text). With
``echo`` the prompt's tokens come first: its first token has no log-probability
where it is part of the text (nothing predicts it), and a model's start token,
which is not, is left out, so that the tokens spell the text. Offsets count
characters, as OpenAI's do; a token that ends inside a UTF-8 character counts
only the characters it completes.
"""

from __future__ import annotations

import codecs

from schulki.gateway.api.editor_schemas import CompletionLogprobs
from schulki.inference.v1 import inference_service_pb2 as inference_pb


def _text(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


class LegacyLogprobs:
    """Token events in, CompletionLogprobs out; ``take`` hands over what gathered since the last take (for a stream)."""

    def __init__(self, start_offset: int = 0):
        self._offset = start_offset
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._clear()

    def _clear(self) -> None:
        self._tokens: list[str] = []
        self._logprobs: list[float | None] = []
        self._tops: list[dict[str, float] | None] = []
        self._offsets: list[int] = []

    def add(self, event: inference_pb.CompleteResponse) -> bool:
        """Take a token event (``unscored``, ``prompt_token`` or ``token``); False for any other event."""
        kind = event.WhichOneof("event")
        if kind == "unscored":
            self._append(event.unscored.piece, None, None)
        elif kind in ("prompt_token", "token"):
            token: inference_pb.TokenLogprob = getattr(event, kind)
            tops: dict[str, float] = {}
            for choice in token.alternatives:
                tops.setdefault(_text(choice.piece), choice.logprob)  # two byte-pieces may read alike: the likelier stays
            self._append(token.chosen.piece, token.chosen.logprob, tops)
        else:
            return False
        return True

    def _append(self, piece: bytes, logprob: float | None, tops: dict[str, float] | None) -> None:
        self._tokens.append(_text(piece))
        self._logprobs.append(logprob)
        self._tops.append(tops)
        self._offsets.append(self._offset)
        self._offset += len(self._decoder.decode(piece))

    @property
    def empty(self) -> bool:
        return not self._tokens

    def take(self) -> CompletionLogprobs:
        taken = CompletionLogprobs(tokens=self._tokens, token_logprobs=self._logprobs, top_logprobs=self._tops, text_offset=self._offsets)
        self._clear()
        return taken
