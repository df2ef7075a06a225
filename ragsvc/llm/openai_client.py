"""OpenAIGenerator: the Generator over any OpenAI-compatible server (ours, vLLM, llama.cpp) through httpx.

Chat messages go to `/chat/completions`, plain strings to `/completions`; logprobs are read from either
endpoint's shape. Connection failures (server starting, restarting) are retried with backoff; a read timeout
is not, since the request may still be running there. Errors come back as ragsvc errors that carry the
server's own message, with the status a gateway gives:

- 401 / 403 (our key) and 404 (our model name or base URL) -> UpstreamRefused, a 502: these are the settings
  ragsvc was started with, not the user's request, so a user must not be told their request was wrong
- other 4xx -> InvalidInput (the request itself is wrong, e.g. too long for the context; retrying will not help)
- 503 -> NotReady (the server is up but still loading its model; retry later)
- 504, or no answer within the read timeout -> UpstreamTimeout
- other 5xx, an error event mid-stream, or no connection after the retries -> UpstreamError
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from ragsvc.errors import InvalidInput, NotReady, UpstreamError, UpstreamRefused, UpstreamTimeout
from ragsvc.llm.chat import continues_reply
from ragsvc.llm.generator import (
    GenerateOptions,
    Generation,
    GenerationChunk,
    Prompt,
    TokenLogprob,
    Usage,
    check_messages,
    map_in_threads,
    options,
)

logger = logging.getLogger(__name__)


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message") or err.get("detail") or err)
    return str(err)


KEY_SETTING = "RAGSVC_GENERATOR__API_KEY"
MODEL_SETTING = "RAGSVC_GENERATOR__MODEL"
URL_SETTING = "RAGSVC_GENERATOR__URL"


def raise_for_status(response: httpx.Response, url: str, *, model: str | None = None) -> None:
    if response.status_code < 400:
        return
    message = _server_message(response)
    if response.status_code in (401, 403):
        raise UpstreamRefused(
            f"the model server at {url} refused ragsvc's API key ({response.status_code}: {message}); set the key "
            f"it accepts in {KEY_SETTING} (for ragsvc serve-model, one made with `ragsvc keys create`)")
    if response.status_code == 404:
        served = f"serves no model {model!r} or " if model else ""
        raise UpstreamRefused(
            f"the model server at {url} answered 404 ({message}): it {served}has no such route; set "
            f"{MODEL_SETTING} to a model its /v1/models lists, and check that {URL_SETTING} ends in /v1")
    if response.status_code < 500:
        raise InvalidInput(f"the model server refused the request ({response.status_code}): {message}")
    if response.status_code == 503:
        raise NotReady(f"the model server at {url} is not ready (503): {message}; retry in a few seconds")
    if response.status_code == 504:
        raise UpstreamTimeout(f"the model server at {url} timed out (504): {message}")
    raise UpstreamError(f"the model server at {url} failed ({response.status_code}): {message}")


def _chat_tokens(logprobs: dict[str, Any] | None) -> list[TokenLogprob]:
    if not logprobs or not logprobs.get("content"):
        return []
    return [
        TokenLogprob(token=t["token"], logprob=t["logprob"],
                     top=tuple((a["token"], a["logprob"]) for a in t.get("top_logprobs") or ()))
        for t in logprobs["content"]
    ]


def _completion_tokens(logprobs: dict[str, Any] | None) -> list[TokenLogprob]:
    if not logprobs or not logprobs.get("tokens"):
        return []
    tops = logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"])
    return [
        TokenLogprob(token=tok, logprob=lp,
                     top=tuple(sorted((top or {}).items(), key=lambda kv: -kv[1])))
        for tok, lp, top in zip(logprobs["tokens"], logprobs["token_logprobs"], tops, strict=False)
    ]


def _usage(body: dict[str, Any] | None) -> Usage | None:
    if not body:
        return None
    details = body.get("prompt_tokens_details") or {}
    return Usage(prompt_tokens=body.get("prompt_tokens", 0), completion_tokens=body.get("completion_tokens", 0),
                 cached_tokens=details.get("cached_tokens") or 0)


def _checked_base_url(text: str) -> str:
    try:
        url = httpx.URL(text.strip())
    except httpx.InvalidURL as exc:
        raise InvalidInput(f"model server URL {text!r} is not a URL ({exc})", detail={"param": "url"}) from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidInput(f"model server URL {text!r} must be an http(s):// base URL including /v1, e.g. "
                           "http://127.0.0.1:8001/v1", detail={"param": "url"})
    return str(url).rstrip("/")


class OpenAIGenerator:
    """Generator over an OpenAI-compatible HTTP API. `base_url` includes the version prefix, as with the
    official client: "http://127.0.0.1:8000/v1". `model` None = the first model the server lists."""

    def __init__(
        self, base_url: str, *, model: str | None = None, api_key: str | None = None, timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0, max_retries: int = 3, retry_backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = _checked_base_url(base_url)
        self._max_retries = max_retries
        self._backoff_s = retry_backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self._model = model

    @property
    def model(self) -> str:
        if self._model is None:
            models = self._send("GET", "/models").json().get("data") or []
            if not models:
                raise UpstreamRefused(f"the model server at {self.base_url} lists no models; set {MODEL_SETTING} "
                                      "to the model it serves")
            self._model = str(models[0]["id"])
        return self._model

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------------------

    def _retrying(self, attempt: Any) -> Any:
        """Run `attempt()`, retrying connection failures (nothing reached the server, so retrying is safe)."""
        for retry in range(self._max_retries + 1):
            try:
                return attempt()
            except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                if retry == self._max_retries:
                    raise UpstreamError(
                        f"cannot reach the model server at {self.base_url} after {retry + 1} tries ({err}); "
                        "start it (`ragsvc serve-model`) or fix the base URL"
                    ) from err
                time.sleep(self._backoff_s * 2**retry)
        raise AssertionError("unreachable")

    def _timed_out(self, path: str) -> UpstreamTimeout:
        return UpstreamTimeout(f"{self.base_url}{path} did not answer within the read timeout; "
                               "raise timeout_s or lower max_tokens")

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        def attempt() -> httpx.Response:
            try:
                return self._client.request(method, path, json=body)
            except httpx.ReadTimeout as err:
                raise self._timed_out(path) from err
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as err:
                raise UpstreamError(f"the connection to {self.base_url}{path} broke before the answer ({err}); "
                                    "the model server may have stopped") from err

        response = self._retrying(attempt)
        raise_for_status(response, f"{self.base_url}{path}", model=(body or {}).get("model"))
        return response

    # --- requests -----------------------------------------------------------------------------------------

    def _request(self, prompt: Prompt, opts: GenerateOptions, *, stream: bool) -> tuple[str, dict[str, Any]]:
        messages = check_messages(prompt)
        body: dict[str, Any] = {
            "model": self.model, "max_tokens": opts.max_tokens, "temperature": opts.temperature,
            "top_p": opts.top_p, "stream": stream, **opts.extra,
        }
        if opts.stop:
            body["stop"] = list(opts.stop)
        if opts.seed is not None:
            body["seed"] = opts.seed
        if stream:
            body["stream_options"] = {"include_usage": True}
        if messages is not None:
            body["messages"] = messages
            if continues_reply(messages):  # vLLM's extension, which ragsvc's server speaks too
                body.update(continue_final_message=True, add_generation_prompt=False)
            if opts.logprobs:
                body.update(logprobs=True, top_logprobs=opts.top_logprobs)
            return "/chat/completions", body
        body["prompt"] = prompt
        if opts.logprobs:
            body["logprobs"] = opts.top_logprobs
        return "/completions", body

    def generate(self, prompt: Prompt, **kwargs: Any) -> Generation:
        """See Generator.generate; keyword options as in `ragsvc.llm.generator.options`."""
        return self._complete(*self._request(prompt, options(**kwargs), stream=False))

    def _complete(self, path: str, body: dict[str, Any]) -> Generation:
        data = self._send("POST", path, body).json()
        choice = data["choices"][0]
        if path == "/chat/completions":
            text, tokens = choice["message"].get("content") or "", _chat_tokens(choice.get("logprobs"))
        else:
            text, tokens = choice.get("text") or "", _completion_tokens(choice.get("logprobs"))
        usage = _usage(data.get("usage")) or Usage(prompt_tokens=0, completion_tokens=len(tokens))
        return Generation(text=text, tokens=tuple(tokens), finish_reason=choice.get("finish_reason") or "stop",
                          usage=usage, server=self.base_url)

    def generate_many(self, prompts: Sequence[Prompt], *, max_concurrency: int = 32, **kwargs: Any) -> list[Generation]:
        """See Generator.generate_many: every request built and checked first, then sent over at most
        `max_concurrency` connections at once (threads: httpx.Client is thread-safe, and a blocking pool keeps
        this callable from any thread, including ones that run an event loop). The server batches what arrives
        together. Results in prompt order; the first failure is raised and the requests not yet sent are not."""
        if max_concurrency < 1:
            raise InvalidInput(f"max_concurrency must be at least 1, got {max_concurrency}")
        opts = options(**kwargs)
        requests = [self._request(p, opts, stream=False) for p in prompts]
        return map_in_threads(lambda request: self._complete(*request), requests, max_workers=max_concurrency,
                              name="ragsvc-openai")

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[GenerationChunk]:
        """See Generator.stream: chunks as the server sends them; leaving early closes the connection, which
        makes our server abort the request."""
        path, body = self._request(prompt, options(**kwargs), stream=True)
        chat = path == "/chat/completions"
        response = self._retrying(lambda: self._open_stream(path, body))
        try:
            yield from self._chunks(response, chat=chat)
        except httpx.ReadTimeout as err:
            raise self._timed_out(path) from err
        except (httpx.ReadError, httpx.RemoteProtocolError) as err:
            raise UpstreamError(f"the connection to {self.base_url}{path} broke mid-stream ({err})") from err
        finally:
            response.close()

    def _open_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        request = self._client.build_request("POST", path, json=body)
        try:
            response = self._client.send(request, stream=True)
        except httpx.ReadTimeout as err:
            raise self._timed_out(path) from err
        if response.status_code >= 400:
            response.read()
            response.close()
            raise_for_status(response, f"{self.base_url}{path}", model=body.get("model"))
        return response

    def _chunks(self, response: httpx.Response, *, chat: bool) -> Iterator[GenerationChunk]:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            data = json.loads(payload)
            if "error" in data:
                raise UpstreamError(f"the model server failed mid-stream: {_server_message_from(data)}")
            usage = _usage(data.get("usage"))
            for choice in data.get("choices") or ():
                if chat:
                    text = (choice.get("delta") or {}).get("content") or ""
                    tokens = _chat_tokens(choice.get("logprobs"))
                else:
                    text, tokens = choice.get("text") or "", _completion_tokens(choice.get("logprobs"))
                yield GenerationChunk(text=text, tokens=tuple(tokens), finish_reason=choice.get("finish_reason"),
                                      server=self.base_url)
            if usage is not None and not data.get("choices"):
                yield GenerationChunk(text="", usage=usage, server=self.base_url)


def _server_message_from(data: dict[str, Any]) -> str:
    err = data.get("error")
    return str(err.get("message") if isinstance(err, dict) else err)
