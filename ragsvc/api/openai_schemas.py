"""Wire models of the OpenAI-compatible API (`/v1/models`, `/v1/completions`, `/v1/chat/completions`).

Requests accept what the official `openai` client sends; fields we cannot honour (tools, logit_bias, echo,
penalties other than 0) are accepted in the schema and refused with a 400 naming the field, rather than
silently ignored. `top_k`, `ignore_eos` and `stop_token_ids` are extensions in vLLM's spelling.
Responses follow OpenAI's shapes field for field, so any OpenAI client parses them unchanged.

Every field a request sends is bounded here, so validation refuses an oversized request (400 naming the
field) before any tokenising or engine work: numbers must be finite (NaN / Infinity refused), `seed` fits a
signed 64-bit integer, `n` <= 16, `max_tokens` <= 2**20 (and, after tokenising, prompt + max_tokens <=
the model's context), `logprobs` / `top_logprobs` <= 20, at most 16 `stop` strings of 1,024 characters and
256 `stop_token_ids`, at most MAX_MESSAGES messages, MAX_TEXT_CHARS characters in any one text (message,
content part or prompt string), MAX_PROMPTS prompts and MAX_PROMPT_TOKENS ids in a token-id prompt. The body
as a whole is bounded before parsing by the server's body limit (413).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_MESSAGES = 1024
MAX_TEXT_CHARS = 1_000_000
"""About 250k tokens of English: above every context served here, below what takes seconds to tokenise."""
MAX_PROMPTS = 16
MAX_PROMPT_TOKENS = 1 << 20
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
TokenId = Annotated[int, Field(ge=0, le=INT64_MAX)]
TokenIds = Annotated[list[TokenId], Field(max_length=MAX_PROMPT_TOKENS)]
StopText = Annotated[str, Field(max_length=1024)]

# --- shared -------------------------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields shared by both endpoints. Size bounds live here, sampling range checks in SamplingParams; errors
    come back as 400."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(max_length=1024)
    temperature: float | None = None
    top_p: float | None = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=16)] | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(None, max_length=1024)
    # extensions (vLLM's names)
    top_k: int | None = Field(None, ge=0, le=1 << 31)
    ignore_eos: bool = False
    stop_token_ids: Annotated[list[TokenId], Field(max_length=256)] | None = None


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


# --- /v1/completions ----------------------------------------------------------------------------------


class CompletionRequest(SamplingFields):
    prompt: (Text | Annotated[list[Text], Field(max_length=MAX_PROMPTS)] | TokenIds
             | Annotated[list[TokenIds], Field(max_length=MAX_PROMPTS)])
    max_tokens: int | None = Field(16, ge=1, le=1 << 20)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: Text | None = None
    best_of: int | None = Field(None, ge=1, le=16)


class CompletionLogprobs(BaseModel):
    """Legacy logprobs: parallel lists, one entry per generated token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# --- /v1/chat/completions -----------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[ContentPart], Field(max_length=MAX_MESSAGES)] | None = None
    name: str | None = Field(None, max_length=1024)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=1 << 20)
    max_completion_tokens: int | None = Field(None, ge=1, le=1 << 20)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


# --- /v1/models and errors ----------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ragsvc"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
