"""ScriptedGenerator: a Generator that answers from a script, for testing decision logic (FLARE's thresholds,
agent planning) where a 135M model cannot be relied on to decide. Never a stand-in for testing the engine."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ragsvc.llm.generator import Generation, GenerationChunk, Prompt, TokenLogprob, Usage, options

Reply = str | Generation
Script = Sequence[Reply] | Callable[[Prompt], Reply]


class ScriptedGenerator:
    """Replies in order from a list (cycling when it runs out is refused: a test should say what it expects),
    or from a function of the prompt. String replies get one token per whitespace-separated word, each with
    logprob log(`confidence`). Every call is recorded in `calls` as (prompt, options)."""

    def __init__(self, script: Script, *, model: str = "scripted", confidence: float = 0.9) -> None:
        self.model = model
        self._script = script
        self._next = 0
        self._logprob = math.log(confidence)
        self.calls: list[tuple[Prompt, dict[str, Any]]] = []

    def _reply(self, prompt: Prompt) -> Reply:
        if callable(self._script):
            return self._script(prompt)
        if self._next >= len(self._script):
            raise AssertionError(f"ScriptedGenerator ran out of replies after {self._next} calls")
        reply = self._script[self._next]
        self._next += 1
        return reply

    def generate(self, prompt: Prompt, **kwargs: Any) -> Generation:
        opts = options(**kwargs)
        self.calls.append((prompt, kwargs))
        reply = self._reply(prompt)
        if isinstance(reply, Generation):
            return reply
        words = reply.split(" ")[: opts.max_tokens]
        tokens = [TokenLogprob(token=(" " if i else "") + w, logprob=self._logprob) for i, w in enumerate(words)]
        text = "".join(t.token for t in tokens)
        finish = "length" if len(words) < len(reply.split(" ")) else "stop"
        return Generation(text=text, tokens=tuple(tokens) if opts.logprobs else (), finish_reason=finish,
                          usage=Usage(prompt_tokens=len(str(prompt).split()), completion_tokens=len(tokens)))

    def generate_many(self, prompts: Sequence[Prompt], **kwargs: Any) -> list[Generation]:
        """One `generate` per prompt, in order (so a list script is consumed in prompt order)."""
        options(**kwargs)  # bad options raise before any reply is taken
        return [self.generate(p, **kwargs) for p in prompts]

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[GenerationChunk]:
        gen = self.generate(prompt, **kwargs)
        emitted = 0  # like an engine, stream the reply's text: a token it leaves out (end of turn) adds none
        for tok in gen.tokens or (TokenLogprob(token=gen.text, logprob=0.0),):
            piece = gen.text[emitted : emitted + len(tok.token)]
            emitted += len(piece)
            yield GenerationChunk(text=piece, tokens=(tok,) if gen.tokens else ())
        yield GenerationChunk(text="", finish_reason=gen.finish_reason, usage=gen.usage)
