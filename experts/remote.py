"""Remote experts: any OpenAI-compatible chat-completions endpoint behind the interface of a local expert.

A remote expert is a model served elsewhere (vLLM, llama.cpp's server, TGI, OpenAI itself) that the router,
FlipMoE and the director call like a local one (`GenerativeExpert`): `generate` and `generate_batch`,
plus `stream` (text deltas as they arrive) and `chat` (a conversation with tools, for the director's
tool-calling explorer). Requests time out after `timeout_s` (per connect, read and write); connection
errors, timeouts, 429 and 5xx answers are retried `max_retries` times with exponential backoff (or
the server's Retry-After); other 4xx answers are the caller's mistake and fail at once. A stream is
retried only until the server accepts it (status 200): after that, deltas already handed out cannot be
taken back, so a stream that breaks off is an error.

In a bundle a remote expert is JSON, and its key comes from the environment, never from a file:

    {"kind": "remote", "name": "thinkfl", "base_url": "http://vllm:8000/v1", "model": "ThinkFL-7B",
     "api_key_env": "VLLM_API_KEY", "timeout_s": 60, "max_retries": 3, "backoff": 0.5}
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from experts.interface import Constraint, Generation
from flipmoe.errors import FlipmoeInputError

__all__ = ["ChatReply", "RemoteExpert", "RemoteExpertError", "ToolCall"]

_RETRYABLE_STATUS = frozenset({429}) | frozenset(range(500, 600))  # other 4xx: the request itself is wrong
_MAX_RETRY_AFTER_S = 30.0
_CONFIG_KEYS = ("kind", "name", "base_url", "model", "api_key_env", "timeout_s", "max_retries", "backoff",
                "max_concurrency")


class RemoteExpertError(RuntimeError):
    """A remote expert could not answer: the endpoint, and the HTTP status when there was one, are named."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asks for; `arguments` is the model's JSON text, as sent."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; a `ValueError` naming the tool when the model wrote no JSON object."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError as err:
            raise ValueError(f"tool call {self.name!r} ({self.id}): arguments are not JSON: {err}") from None
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r} ({self.id}): arguments must be a JSON object")
        return value


@dataclass(frozen=True)
class ChatReply:
    """The assistant's turn: text and/or tool calls, why it stopped, and the token counts the server reported."""

    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    """"stop", "length", "tool_calls" or "content_filter"."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation before the tool results."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in self.tool_calls]
        return message


class RemoteExpert:
    """An expert served behind an OpenAI-compatible `/v1/chat/completions` endpoint."""

    def __init__(self, name: str, base_url: str, model: str, *, api_key: str | None = None,
                 api_key_env: str | None = None, timeout_s: float = 60.0, max_retries: int = 3,
                 backoff: float = 0.5, max_concurrency: int = 8) -> None:
        if timeout_s <= 0 or max_retries < 0 or backoff < 0 or max_concurrency < 1:
            raise FlipmoeInputError(f"remote expert {name!r}: timeout_s must be > 0, max_retries and backoff >= 0, "
                                    "max_concurrency >= 1")
        self.name = name
        self.base_url = _api_root(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s, self.max_retries, self.backoff = float(timeout_s), int(max_retries), float(backoff)
        self.max_concurrency = max_concurrency
        key = api_key if api_key is not None else (os.environ.get(api_key_env) if api_key_env else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s), headers=headers)

    # -- configuration ---------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, name: str | None = None) -> RemoteExpert:
        """A remote expert from its bundle entry; the API key is read from the variable named in `api_key_env`."""
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if "api_key" in config:
            raise FlipmoeInputError("remote expert config holds an API key",
                                    hint="never store keys: name an environment variable in 'api_key_env'")
        if unknown:
            raise FlipmoeInputError(f"unknown remote expert config key(s) {', '.join(unknown)}",
                                    hint=f"valid keys: {', '.join(_CONFIG_KEYS)}")
        if config.get("kind", "remote") != "remote":
            raise FlipmoeInputError(f"expert kind {config.get('kind')!r} is not 'remote'")
        expert_name = name or config.get("name")
        missing = [k for k, v in (("name", expert_name), ("base_url", config.get("base_url")),
                                  ("model", config.get("model"))) if not v]
        if missing:
            raise FlipmoeInputError(f"remote expert config lacks {', '.join(missing)}")
        key_env = config.get("api_key_env")
        if key_env and key_env not in os.environ:
            raise FlipmoeInputError(f"remote expert {expert_name!r}: environment variable {key_env} is not set",
                                    hint=f"export {key_env}=<the endpoint's API key>")
        options = {k: config[k] for k in ("timeout_s", "max_retries", "backoff", "max_concurrency") if k in config}
        return cls(str(expert_name), str(config["base_url"]), str(config["model"]), api_key_env=key_env, **options)

    def to_config(self) -> dict[str, Any]:
        """The bundle entry (JSON-ready); holds the name of the key's environment variable, never the key."""
        config: dict[str, Any] = {"kind": "remote", "name": self.name, "base_url": self.base_url, "model": self.model,
                                  "timeout_s": self.timeout_s, "max_retries": self.max_retries,
                                  "backoff": self.backoff, "max_concurrency": self.max_concurrency}
        if self.api_key_env:
            config["api_key_env"] = self.api_key_env
        return config

    def __repr__(self) -> str:
        return f"RemoteExpert(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    # -- the GenerativeExpert interface ----------------------------------------------------------

    def generate(self, prompt: str, *, task: str | None = None, max_new_tokens: int = 64,
                 stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0,
                 constraint: Constraint | None = None, seed: int | None = None) -> Generation:
        """Answer one prompt (sent as the user message; `task`, when given, as a system message)."""
        body = self._body(_prompt_messages(prompt, task), max_new_tokens=max_new_tokens, stop=stop,
                          temperature=temperature, top_p=top_p, seed=seed, constraint=constraint)
        reply = self._reply(self._request("POST", "/chat/completions", body).json())
        return Generation(text=_cut(reply.content or "", stop), expert=self.name, finish_reason=reply.finish_reason,
                          prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)

    def generate_batch(self, prompts: Sequence[str], *, task: str | None = None, max_new_tokens: int = 64,
                       stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0,
                       seed: int | None = None, constraint: Constraint | None = None) -> list[Generation]:
        """Answer several prompts; requests run concurrently (the server batches them), answers keep their order."""
        def one(prompt: str) -> Generation:
            return self.generate(prompt, task=task, max_new_tokens=max_new_tokens, stop=stop,
                                 temperature=temperature, top_p=top_p, seed=seed, constraint=constraint)

        if len(prompts) <= 1:
            return [one(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as pool:
            return list(pool.map(one, prompts))

    def stream(self, prompt: str, *, task: str | None = None, max_new_tokens: int = 64, stop: Sequence[str] = (),
               temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
        """Yield the answer's text as it is generated (server-sent events), delta by delta."""
        body = self._body(_prompt_messages(prompt, task), max_new_tokens=max_new_tokens, stop=stop,
                          temperature=temperature, top_p=top_p, seed=seed, constraint=None)
        body["stream"] = True
        url = self.base_url + "/chat/completions"
        response = self._request("POST", "/chat/completions", body, stream=True)
        try:
            for chunk in _server_sent_events(response, url):
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
        finally:
            response.close()

    def chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None, *,
             tool_choice: str | Mapping[str, Any] | None = None, max_new_tokens: int = 512,
             stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
             constraint: Constraint | None = None) -> ChatReply:
        """One assistant turn of a conversation (OpenAI message format), with function `tools` it may call.

        Append `reply.to_message()` and one `{"role": "tool", "tool_call_id": ..., "content": ...}` message
        per tool call to `messages`, then call again for the next turn.
        """
        body = self._body(list(messages), max_new_tokens=max_new_tokens, stop=stop, temperature=temperature,
                          top_p=top_p, seed=seed, constraint=constraint)
        if tools:
            body["tools"] = list(tools)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        return self._reply(self._request("POST", "/chat/completions", body).json())

    def models(self) -> list[str]:
        """The model ids the endpoint serves (`GET /v1/models`); a cheap health check."""
        return [m["id"] for m in self._request("GET", "/models").json().get("data", [])]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteExpert:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol ----------------------------------------------------------------------------

    def _body(self, messages: list[Any], *, max_new_tokens: int, stop: Sequence[str], temperature: float,
              top_p: float, seed: int | None, constraint: Constraint | None) -> dict[str, Any]:
        if max_new_tokens < 1:
            raise FlipmoeInputError("max_new_tokens must be at least 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise FlipmoeInputError("temperature must be >= 0 and top_p in (0, 1]")
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                                "temperature": temperature, "top_p": top_p}
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        if constraint is not None:
            body.update(_constraint_fields(constraint))
        return body

    def _reply(self, payload: dict[str, Any]) -> ChatReply:
        url = self.base_url + "/chat/completions"
        try:
            choice = payload["choices"][0]
            message = choice["message"]
            calls = tuple(ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"].get("arguments", ""))
                          for c in message.get("tool_calls") or [])
        except (KeyError, IndexError, TypeError) as err:
            raise RemoteExpertError(f"remote expert {self.name!r}: {url} answered without a chat completion "
                                    f"(missing {err})", url=url, status=200) from None
        usage = payload.get("usage") or {}
        return ChatReply(content=message.get("content"), tool_calls=calls,
                         finish_reason=choice.get("finish_reason") or "stop",
                         prompt_tokens=int(usage.get("prompt_tokens") or 0),
                         completion_tokens=int(usage.get("completion_tokens") or 0))

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                 stream: bool = False) -> httpx.Response:
        """The endpoint's successful response, after retrying what is worth retrying."""
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                request = self._client.build_request(method, url, json=body)
                response = self._client.send(request, stream=stream)
            except httpx.TimeoutException as err:
                failure = RemoteExpertError(f"remote expert {self.name!r}: {method} {url} timed out after "
                                            f"{self.timeout_s:g} s ({type(err).__name__})", url=url)
            except httpx.TransportError as err:
                reason = str(err) or type(err).__name__
                failure = RemoteExpertError(f"remote expert {self.name!r}: cannot reach {url}: {reason}", url=url)
            else:
                if response.status_code < 400:
                    return response
                failure = self._status_error(method, url, response)
                if response.status_code not in _RETRYABLE_STATUS:
                    raise failure
                retry_after = _retry_after(response)
            if attempt == self.max_retries:
                if not self.max_retries:
                    raise failure
                raise RemoteExpertError(f"{failure} (gave up after {attempt + 1} attempts)", url=url,
                                        status=failure.status)
            time.sleep(retry_after if retry_after is not None else self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _status_error(self, method: str, url: str, response: httpx.Response) -> RemoteExpertError:
        response.read()
        response.close()
        try:
            error = response.json().get("error") or {}
            detail = error.get("message") if isinstance(error, dict) else str(error)
        except ValueError:
            detail = None
        detail = detail or response.text[:300] or response.reason_phrase
        return RemoteExpertError(f"remote expert {self.name!r}: {method} {url} answered HTTP {response.status_code}: "
                                 f"{detail}", url=url, status=response.status_code)


def _api_root(base_url: str) -> str:
    """The URL that `/chat/completions` hangs off: a bare host gets OpenAI's `/v1`."""
    base = base_url.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FlipmoeInputError(f"remote expert base_url {base_url!r} is not an http(s) URL",
                                hint="for example http://localhost:8000/v1")
    return base if parts.path else base + "/v1"


def _prompt_messages(prompt: str, task: str | None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompt}]
    if task is not None:
        messages.insert(0, {"role": "system", "content": f"Task: {task}. Answer with the result only."})
    return messages


def _cut(text: str, stop: Sequence[str]) -> str:
    """Text up to the first stop sequence (servers drop it already; some older ones keep it)."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


def _constraint_fields(constraint: Constraint) -> dict[str, Any]:
    """Request fields for a constraint: OpenAI's `response_format` for JSON schemas, vLLM's
    `structured_outputs` for regular expressions and grammars."""
    from experts.constrained import GrammarConstraint, JsonSchemaConstraint, RegexConstraint

    if isinstance(constraint, JsonSchemaConstraint):
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "answer", "schema": constraint.schema, "strict": True}}}
    if isinstance(constraint, RegexConstraint):
        return {"structured_outputs": {"regex": constraint.pattern}}
    if isinstance(constraint, GrammarConstraint):
        return {"structured_outputs": {"grammar": constraint.lark}}
    raise FlipmoeInputError(f"a remote expert cannot send a {type(constraint).__name__} constraint",
                            hint="use JsonSchemaConstraint, RegexConstraint or GrammarConstraint")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _server_sent_events(response: httpx.Response, url: str) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a chat-completions event stream, up to `data: [DONE]`."""
    data: list[str] = []
    try:
        for line in itertools.chain(response.iter_lines(), [""]):  # a last blank line ends an event left open
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
                continue
            if line or not data:
                continue  # comments (": ping"), event names, ids; or a blank line with nothing pending
            payload, data = "\n".join(data), []
            if payload == "[DONE]":
                return
            chunk = json.loads(payload)
            if "error" in chunk:
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise RemoteExpertError(f"{url} reported an error mid-stream: {message}", url=url)
            yield chunk
    except httpx.TimeoutException:
        raise RemoteExpertError(f"{url}: the stream stalled (no data within the read timeout)", url=url) from None
    except httpx.TransportError as err:
        raise RemoteExpertError(f"{url}: the stream broke off: {err or type(err).__name__}", url=url) from None
    except ValueError as err:
        raise RemoteExpertError(f"{url}: a stream event is not JSON: {err}", url=url) from None
    raise RemoteExpertError(f"{url}: the stream ended without 'data: [DONE]'", url=url)
