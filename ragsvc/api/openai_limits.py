"""The OpenAI routes' per-request bounds as settings (`RAGSVC_MODEL_API__*`), checked on a parsed request.

The wire schema (openai_schemas.py) holds fixed ceilings that every server enforces while parsing; these
limits are the operator's, at or below them, read once per app from the `model_api` settings. Pydantic
models cannot take bounds per app, so the check runs on the parsed request, before any tokenising, KV
block or queue place is taken: a request one past a bound answers 400 naming the field, the bound and the
setting that raises it, and nothing of it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from ragsvc.api.openai_schemas import ChatCompletionRequest, CompletionRequest
from ragsvc.config import ModelApiSettings
from ragsvc.errors import InvalidInput


@dataclass(frozen=True)
class OpenAILimits:
    """See ModelApiSettings for what each bounds; the defaults are its defaults."""

    max_n: int = 16
    max_tokens: int = 1 << 20
    max_prompts: int = 16
    max_prompt_tokens: int = 1 << 20
    max_messages: int = 1024
    max_text_chars: int = 1_000_000
    max_logprobs: int = 20
    max_stop: int = 16

    @classmethod
    def from_settings(cls, settings: ModelApiSettings) -> OpenAILimits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def _over(value: int, bound: int, param: str, setting: str, what: str) -> None:
    if value > bound:
        raise InvalidInput(f"{param} has {what} {value}, more than this server's limit of {bound} "
                           f"(RAGSVC_MODEL_API__{setting.upper()})", detail={"param": param})


def _text(text: str | None, limits: OpenAILimits, param: str) -> None:
    if text is not None:
        _over(len(text), limits.max_text_chars, param, "max_text_chars", "length")


def _common(req: CompletionRequest | ChatCompletionRequest, limits: OpenAILimits) -> None:
    _over(req.n, limits.max_n, "n", "max_n", "value")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    _over(len(stops), limits.max_stop, "stop", "max_stop", "count")


def check_completion(req: CompletionRequest, limits: OpenAILimits) -> None:
    """400 if `req` is past any of `limits` (the first one found)."""
    _common(req, limits)
    if req.max_tokens is not None:
        _over(req.max_tokens, limits.max_tokens, "max_tokens", "max_tokens", "value")
    if req.logprobs is not None:
        _over(req.logprobs, limits.max_logprobs, "logprobs", "max_logprobs", "value")
    _text(req.suffix, limits, "suffix")
    prompt = req.prompt
    if isinstance(prompt, str):
        _text(prompt, limits, "prompt")
    elif prompt and isinstance(prompt[0], int):
        _over(len(prompt), limits.max_prompt_tokens, "prompt", "max_prompt_tokens", "token count")
    else:  # several prompts: each is n sequences
        _many_prompts(prompt, limits)  # type: ignore[arg-type]  # list[str] | list[list[int]] here
        _over(len(prompt) * req.n, limits.max_n, "n", "max_n", "prompts × n of")


def _many_prompts(prompts: Sequence[str | list[int]], limits: OpenAILimits) -> None:
    _over(len(prompts), limits.max_prompts, "prompt", "max_prompts", "count")
    for one in prompts:
        if isinstance(one, str):
            _text(one, limits, "prompt")
        else:
            _over(len(one), limits.max_prompt_tokens, "prompt", "max_prompt_tokens", "token count")


def check_chat(req: ChatCompletionRequest, limits: OpenAILimits) -> None:
    """400 if `req` is past any of `limits` (the first one found)."""
    _common(req, limits)
    for param in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, param)
        if value is not None:
            _over(value, limits.max_tokens, param, "max_tokens", "value")
    if req.top_logprobs is not None:
        _over(req.top_logprobs, limits.max_logprobs, "top_logprobs", "max_logprobs", "value")
    _over(len(req.messages), limits.max_messages, "messages", "max_messages", "count")
    for message in req.messages:
        if isinstance(message.content, str):
            _text(message.content, limits, "messages")
        elif message.content is not None:
            _over(len(message.content), limits.max_messages, "messages", "max_messages", "content part count")
            for part in message.content:
                _text(part.text, limits, "messages")
