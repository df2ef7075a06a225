"""Turn OpenAI wire requests into engine inputs (token ids + SamplingParams) and engine outputs into wire shapes.

Validation happens here, before anything reaches the engine, so every refusal is a 400 that names the field and
the limit, and no KV block is ever taken for a request that cannot run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from ragsvc.api.openai_schemas import (
    ChatCompletionRequest,
    ChatTokenLogprob,
    ChoiceLogprobs,
    CompletionLogprobs,
    CompletionRequest,
    SamplingFields,
    TopLogprob,
)
from ragsvc.errors import InvalidInput
from ragsvc.llm.chat import render_chat
from ragsvc.serving.outputs import TokenLogprob
from ragsvc.serving.sampling_params import SamplingParams

MAX_N = 16
"""Upper bound on `n` (and prompts × n): each choice is a full sequence in the batch."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())


def _invalid(message: str, param: str | None) -> InvalidInput:
    return InvalidInput(message, detail={"param": param})


def check_unsupported(req: SamplingFields) -> None:
    """Refuse fields we would otherwise silently ignore (a client relying on them would get wrong results)."""
    if not 1 <= req.n <= MAX_N:
        raise _invalid(f"n must be between 1 and {MAX_N}, got {req.n}", "n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) not in (None, 0, 0.0):
            raise _invalid(f"{name} is not supported by this server; leave it unset or 0", name)
    if req.logit_bias:
        raise _invalid("logit_bias is not supported by this server; leave it unset", "logit_bias")
    if isinstance(req, CompletionRequest):
        if req.echo:
            raise _invalid("echo is not supported; prepend the prompt yourself", "echo")
        if req.suffix:
            raise _invalid("suffix (insertion) is not supported; leave it unset", "suffix")
        if req.best_of not in (None, req.n):
            raise _invalid("best_of other than n is not supported; leave it unset", "best_of")
    if isinstance(req, ChatCompletionRequest):
        if req.tools:
            raise _invalid("tools / function calling is not supported by this server", "tools")
        if req.response_format and req.response_format.get("type", "text") != "text":
            raise _invalid("only response_format {'type': 'text'} is supported", "response_format")
        if req.top_logprobs is not None and not req.logprobs:
            raise _invalid("top_logprobs needs logprobs=true", "top_logprobs")


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if any(not s for s in stops):
        raise _invalid("stop strings must be non-empty", "stop")
    return stops


def build_params(
    req: SamplingFields, *, max_tokens: int, logprobs: int | None, choice: int
) -> SamplingParams:
    """SamplingParams for one choice. With a seed and n > 1, choice i uses seed + i so choices differ (wrapped
    within int64, so the largest seed a request may send still has n distinct ones)."""
    seed = None if req.seed is None else (req.seed + choice + (1 << 63)) % (1 << 64) - (1 << 63)
    try:
        return SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=req.top_k or 0,
            max_tokens=max_tokens,
            stop=_stops(req.stop),
            stop_token_ids=tuple(req.stop_token_ids or ()),
            seed=seed,
            logprobs=logprobs,
            ignore_eos=req.ignore_eos,
        )
    except ValueError as err:  # SamplingParams' own range checks (temperature < 0, top_p outside (0, 1], ...)
        named = str(err).split(" ", 1)[0]  # each of those messages starts with the field's name
        raise _invalid(str(err), named if named in SamplingFields.model_fields else None) from err


def resolve_max_tokens(requested: int | None, *, prompt_len: int, max_model_len: int) -> int:
    """The request's max_tokens, or all the context left when unset; refuses prompts that leave no room."""
    if prompt_len == 0:
        raise _invalid("the prompt is empty; send at least one token", "prompt")
    if requested is not None and requested <= 0:
        raise _invalid(f"max_tokens must be at least 1, got {requested}", "max_tokens")
    if requested is None and prompt_len >= max_model_len:
        raise _invalid(
            f"this model's maximum context length is {max_model_len} tokens (max_model_len) and the prompt has "
            f"{prompt_len}, leaving no room for a reply. Shorten the prompt.", "messages")
    max_tokens = requested if requested is not None else max_model_len - prompt_len
    if prompt_len + max_tokens > max_model_len:
        raise _invalid(
            f"this model's maximum context length is {max_model_len} tokens (max_model_len); the prompt has "
            f"{prompt_len} tokens and max_tokens asks for {max_tokens}, {prompt_len + max_tokens} in all. "
            "Shorten the prompt or lower max_tokens.",
            "messages" if requested is None else "max_tokens",
        )
    return max_tokens


def completion_prompts(req: CompletionRequest, tokenizer: Any, vocab_size: int) -> list[list[int]]:
    """The request's prompt(s) as token ids: a string, a list of strings, a token list, or lists of them."""
    prompt = req.prompt
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise _invalid("prompt is an empty list; send a string or a list of token ids", "prompt")
    out = []
    for p in prompts:
        ids = tokenizer(p)["input_ids"] if isinstance(p, str) else list(p)
        if any(not 0 <= t < vocab_size for t in ids):
            raise _invalid(f"prompt token ids must lie in [0, {vocab_size})", "prompt")
        out.append(ids)
    return out


def _message_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.type != "text":
            raise _invalid(f"content part type {part.type!r} is not supported; send text only", "messages")
        parts.append(part.text or "")
    return "".join(parts)


def _continues(req: ChatCompletionRequest) -> bool:
    """vLLM's extension: `continue_final_message: true` continues the final assistant message."""
    return bool(getattr(req, "continue_final_message", False)) and req.messages[-1].role == "assistant"


def chat_prompt(req: ChatCompletionRequest, tokenizer: Any) -> list[int]:
    """Render the messages with the model's chat template and tokenise (the template carries any BOS)."""
    messages = [{"role": m.role, "content": _message_text(m.content)} for m in req.messages]
    try:
        text = render_chat(tokenizer, messages) if _continues(req) else tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
    except (TemplateError, ValueError, TypeError) as err:  # a template refusing a message order raises these;
        # anything else is a bug and answers 500 with the request id
        raise _invalid(f"the model's chat template rejected the messages: {err}", "messages") from err
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def completion_logprobs(tokens: Sequence[TokenLogprob], *, text_offset: int) -> CompletionLogprobs:
    """Legacy shape; text offsets count from the start of the completion (echo is not supported)."""
    out = CompletionLogprobs()
    for t in tokens:
        out.tokens.append(t.token)
        out.token_logprobs.append(t.logprob)
        out.top_logprobs.append({tok: lp for _, tok, lp in t.top})
        out.text_offset.append(text_offset)
        text_offset += len(t.token)
    return out


def _top(token: str, logprob: float) -> TopLogprob:
    return TopLogprob(token=token, logprob=logprob, bytes=list(token.encode("utf-8")))


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    content = [
        ChatTokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=list(t.token.encode("utf-8")),
            top_logprobs=[_top(tok, lp) for _, tok, lp in t.top],
        )
        for t in tokens
    ]
    return ChoiceLogprobs(content=content)
