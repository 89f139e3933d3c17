"""Constrained output: a JSON schema turned into a llama.cpp grammar that every sampled token must fit.

A schema is compiled once: llama-cpp-python's JSON-schema converter writes the
GBNF text, llama.cpp parses it against the model's vocabulary into a grammar
sampler, and that sampler is kept as a prototype in a small LRU keyed by the
schema's text. Each sequence that asks for the schema gets a clone of the
prototype (its own parse state) at the front of its sampler chain
(sampling.py), so answers with and without a grammar, or with different ones,
run side by side in one batch.

The grammar is not asked first: checking all 262,144 tokens of Gemma's
vocabulary against it each step would cost more than the step. As llama.cpp's
own common sampler does, the chain picks a token from the free logits, and the
grammar checks just that one. Only when it refuses is the pick made again,
first among the SHORTLIST likeliest tokens: when the grammar allows enough of
them (one for a greedy pick, top_k when sampling) the chain picks among those,
which for a greedy pick is exactly the whole vocabulary's answer; else the
grammar goes over the whole vocabulary (GrammarGate).

The converter is llama.cpp's ``json_schema_to_grammar.py`` as llama-cpp-python
ships it; its string rule lets control characters (a raw newline) into a JSON
string, which JSON forbids, so that one rule is replaced with llama.cpp's
current one before the grammar is parsed.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from schulki.runtime.errors import InvalidInput

if TYPE_CHECKING:
    from llama_cpp.llama_cpp import llama_context_p, llama_sampler_p, llama_vocab_p

CACHED_GRAMMARS = 64
"""Compiled schemas kept per model; a class that sends the same few schemas again and again never compiles twice."""

MAX_SCHEMA_CHARS = 64 * 1024
"""The longest schema text compiled: a bigger one is refused before the converter spends time on it."""

SHORTLIST = 1024
"""Likeliest tokens a refused pick is made again from before the grammar goes over the whole vocabulary."""

JSON_OBJECT_SCHEMA = '{"type": "object"}'
"""The schema of OpenAI's ``response_format: json_object``: any JSON object."""

_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def schema_to_gbnf(schema_text: str) -> str:
    """The GBNF grammar of a JSON schema's text; InvalidInput naming the problem when it has none."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if len(schema_text) > MAX_SCHEMA_CHARS:
        raise InvalidInput(f"Das JSON-Schema ist zu lang (höchstens {MAX_SCHEMA_CHARS} Zeichen). (The JSON schema is too long.)")
    try:
        schema: Any = json.loads(schema_text)
    except ValueError as error:
        raise InvalidInput(f"Das JSON-Schema ist kein gültiges JSON: {error} (The JSON schema is not valid JSON.)") from None
    if not isinstance(schema, dict):
        raise InvalidInput("Das JSON-Schema muss ein JSON-Objekt sein. (The JSON schema must be a JSON object.)")
    try:
        gbnf = json_schema_to_gbnf(schema_text)
    except RecursionError:
        raise InvalidInput("Das JSON-Schema ist zu tief verschachtelt. (The JSON schema nests too deeply.)") from None
    except Exception as error:  # the converter reports what it cannot express with assert and plain errors alike
        reason = str(error) or type(error).__name__
        raise InvalidInput(f"Das JSON-Schema lässt sich nicht umsetzen: {reason} (The JSON schema cannot be compiled.)") from None
    return gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR)


class CompiledGrammar:
    """One schema's parsed grammar; ``sampler()`` gives a fresh grammar sampler for one sequence."""

    def __init__(self, schema_text: str, gbnf: str, prototype: llama_sampler_p):
        from schulki.runtime import llama_adapter as lc

        self.schema_text = schema_text
        self.gbnf = gbnf
        self._lc = lc
        self._prototype = prototype
        self.picks = 0
        """Tokens sampled under this grammar, by all sequences (for benchmarks and the log)."""
        self.refused = 0
        """Of them, the picks the grammar refused, so that the pick was made again."""
        self.whole = 0
        """Of those, the picks made again over the whole vocabulary (the shortlist held too few tokens it allows)."""
        # Freed when the last holder lets go: a generation may still hold a grammar the LRU has dropped.
        weakref.finalize(self, lc.llama_sampler_free, prototype)

    def sampler(self) -> llama_sampler_p:
        """A grammar sampler at the grammar's start; free it with llama_sampler_free."""
        return self._lc.llama_sampler_clone(self._prototype)


class GrammarGate:
    """One sequence's grammar in front of its sampler chain; free it with close()."""

    def __init__(self, grammar: CompiledGrammar, n_vocab: int, enough: int = 1):
        """``enough``: allowed tokens among the SHORTLIST likeliest that let the pick be made among them (the chain's
        top_k; 1 for a greedy pick)."""
        from schulki.runtime import llama_adapter as lc

        self._lc = lc
        self._compiled = grammar
        self._grammar: llama_sampler_p | None = grammar.sampler()
        self._candidates = lc.Candidates(n_vocab)
        self._enough = max(enough, 1)

    def sample(self, chain: llama_sampler_p, ctx: llama_context_p, index: int) -> int:
        """The chain's pick from batch position ``index``, within the grammar; both the chain and the grammar accept it."""
        lc, candidates = self._lc, self._candidates
        assert self._grammar is not None, "a closed gate samples nothing"
        candidates.load(ctx, index)
        candidates.apply(chain)
        token = candidates.selected()
        self._compiled.picks += 1
        if not candidates.allows(self._grammar, token):
            self._compiled.refused += 1
            candidates.load(ctx, index)
            candidates.shorten(SHORTLIST)
            candidates.apply(self._grammar)
            if candidates.finite() < self._enough:
                self._compiled.whole += 1
                candidates.load(ctx, index)
                candidates.apply(self._grammar)
            candidates.apply(chain)
            token = candidates.selected()
        lc.llama_sampler_accept(self._grammar, token)
        lc.llama_sampler_accept(chain, token)
        return token

    def close(self) -> None:
        if self._grammar is not None:
            self._lc.llama_sampler_free(self._grammar)
            self._grammar = None


class Grammars:
    """The compiled grammars of one model's vocabulary, most recently used kept; safe to call from any thread."""

    def __init__(self, vocab: llama_vocab_p, size: int = CACHED_GRAMMARS):
        self._vocab = vocab
        self._size = size
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self.compiled = 0
        """Schemas compiled so far (a cache hit compiles nothing)."""

    def compile(self, schema_text: str) -> CompiledGrammar:
        """The grammar of a JSON schema's text, from the cache or compiled now; InvalidInput when it cannot be."""
        # Compiled under the lock: a class that sends one task's schema at once would otherwise compile it once per
        # student (each missing the cache before the first is in). A compile takes milliseconds, and the schema's
        # size is bounded, so the others wait little.
        with self._lock:
            grammar = self._cache.get(schema_text)
            if grammar is not None:
                self._cache.move_to_end(schema_text)
                return grammar
            return self._add(schema_text, schema_to_gbnf(schema_text))

    def compile_gbnf(self, gbnf: str) -> CompiledGrammar:
        """A grammar written in GBNF (a tool call's, tool_calls.py), from the cache or parsed now."""
        key = "gbnf:" + gbnf  # a schema's text is JSON and never starts so
        with self._lock:
            grammar = self._cache.get(key)
            if grammar is not None:
                self._cache.move_to_end(key)
                return grammar
            return self._add(key, gbnf)

    def _add(self, key: str, gbnf: str) -> CompiledGrammar:
        grammar = CompiledGrammar(key, gbnf, self._parse(gbnf))
        self.compiled += 1
        self._cache[key] = grammar
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return grammar

    def _parse(self, gbnf: str) -> llama_sampler_p:
        from schulki.runtime import llama_adapter as lc

        sampler = lc.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:  # llama.cpp logs the parse error and returns NULL
            raise InvalidInput("Das JSON-Schema ergibt keine gültige Grammatik. (The grammar of the JSON schema does not parse.)")
        return sampler
