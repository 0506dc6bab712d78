"""A local OpenAI-compatible chat-completions server, scripted by the test: the double for vLLM and friends.

It speaks the protocol as the real servers do: it validates the request (model, messages and their
roles, tool calls and the tool messages that answer them, sampling parameters, tools, `tool_choice`,
`response_format`, `stream_options`; unknown parameters are refused) and answers with the same JSON
(`choices[].message`, `finish_reason`, `usage`, OpenAI's `{"error": {...}}` bodies) or with server-sent
events (`chat.completion.chunk`s carrying `delta`s, tool-call fragments, an optional usage chunk, then
`data: [DONE]`). The *content* of each answer is scripted by the test; the server applies the request's
`stop` sequences and `max_tokens` to it (a token here is a word with its trailing whitespace), as a
model server would. Faults are scripted too: HTTP errors, delays, and connections dropped before the
answer or in the middle of a stream.

    from openai_server import Fail, Reply, ToolCall, openai_server  # noqa: F401  (the fixture)

    def test_something(openai_server: OpenAIServer) -> None:
        openai_server.script(Fail(503), Reply("cartservice is out of memory"))
        ...  # talk to openai_server.base_url ("http://127.0.0.1:PORT/v1"), model "test-model"
        assert openai_server.requests[-1].body["messages"][0]["role"] == "user"

Outside pytest, `with running_openai_server(models=("thinkfl",), api_key="k") as server: ...`.
A request that finds the script empty gets a 500 naming the problem, so a missing reply fails loudly.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DEFAULT_MODEL = "test-model"


@dataclass(frozen=True)
class ToolCall:
    """A function call the scripted assistant makes; `arguments` as a dict (sent as JSON) or as raw text."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None
    """Call id; generated (`call_...`) when None."""


@dataclass(frozen=True)
class Reply:
    """One scripted assistant answer."""

    content: str | None = ""
    tool_calls: tuple[ToolCall, ...] | list[ToolCall] = ()
    finish_reason: str | None = None
    """Override; by default "tool_calls", "length" (max_tokens reached) or "stop"."""
    delay_s: float = 0.0
    """Seconds before the response starts (for timeouts)."""
    chunk_delay_s: float = 0.0
    """Seconds between stream chunks."""
    drop_after_chunks: int | None = None
    """Streaming only: close the connection after this many chunks, without the end of the stream."""


@dataclass(frozen=True)
class Fail:
    """A scripted failure: an HTTP error with OpenAI's error body, or a dropped connection."""

    status: int = 500
    message: str = "The server had an error while processing your request."
    delay_s: float = 0.0
    retry_after: float | None = None
    """Value of the Retry-After header (429 and 503 answers carry one)."""
    drop: bool = False
    """Close the connection without any response instead of answering `status`."""


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it (also the ones it refused)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """Parsed JSON body, or None (GET, or a body that is not JSON)."""


class _RequestError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


class OpenAIServer:
    """The running server: where it listens, what it was sent, and the script of what it answers."""

    def __init__(self, host: str, port: int, *, models: tuple[str, ...], api_key: str | None) -> None:
        self.url = f"http://{host}:{port}"
        self.base_url = f"{self.url}/v1"
        self.models = models
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply | Fail | Callable[[dict[str, Any]], Reply | Fail]] = deque()
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def script(self, *items: Reply | Fail | str | Callable[[dict[str, Any]], Reply | Fail]) -> None:
        """Queue answers, in order, one per chat-completions request. A string is `Reply(content=...)`; a
        function is called with the request body and returns the answer (for answers that depend on it)."""
        with self._lock:
            self._script.extend(Reply(item) if isinstance(item, str) else item for item in items)

    @property
    def pending(self) -> int:
        """Scripted answers not yet used."""
        with self._lock:
            return len(self._script)

    @property
    def completions(self) -> list[RecordedRequest]:
        """The chat-completions requests received, refused ones included."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next(self, body: dict[str, Any]) -> Reply | Fail:
        with self._lock:
            if not self._script:
                raise _RequestError(500, "openai_server: the test scripted no answer for this request",
                                    kind="server_error")
            item = self._script.popleft()
        return item if isinstance(item, (Reply, Fail)) else item(body)

    def sleep(self, seconds: float) -> None:
        """Waits, but returns at once when the server shuts down."""
        if seconds > 0:
            self.stopping.wait(seconds)


@contextmanager
def running_openai_server(*, models: tuple[str, ...] = (DEFAULT_MODEL,),
                          api_key: str | None = None) -> Iterator[OpenAIServer]:
    """Serve on a free port of 127.0.0.1 until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    host, port = httpd.server_address[:2]
    server = OpenAIServer(str(host), int(port), models=models, api_key=api_key)
    httpd.openai = server  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh server serving `test-model`, without an API key."""
    with running_openai_server() as server:
        yield server


# -- protocol ------------------------------------------------------------------------------------

_ROLES = ("system", "developer", "user", "assistant", "tool")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOKEN = re.compile(r"\S+\s*|\s+")
_OPENAI_PARAMS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "stream",
    "stream_options", "seed", "tools", "tool_choice", "parallel_tool_calls", "response_format", "user",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "metadata", "store",
}
_VLLM_PARAMS = {"structured_outputs", "guided_json", "guided_regex", "guided_grammar", "guided_choice", "top_k",
                "min_p", "repetition_penalty", "min_tokens", "skip_special_tokens", "chat_template_kwargs"}
"""vLLM's extensions to the request, which its server accepts."""


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _require(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise _RequestError(400, message, param=param)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    if name in body and body[name] is not None:
        value = body[name]
        _require(isinstance(value, (int, float)) and not isinstance(value, bool),
                 f"Invalid type for '{name}': expected a number, but got {type(value).__name__} instead.", name)
        _require(low <= value <= high, f"Invalid '{name}': {value} is not in [{low}, {high}].", name)


def _positive_int(body: dict[str, Any], name: str) -> None:
    if name in body and body[name] is not None:
        value = body[name]
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 f"Invalid '{name}': expected an integer >= 1, got {value!r}.", name)


def _text_content(content: Any, where: str) -> str:
    """The text of a message's content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    _require(isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                               and isinstance(p.get("text"), str) for p in content),
             f"Invalid '{where}.content': expected a string or an array of text parts.", f"{where}.content")
    return "".join(part["text"] for part in content)


def _validate_messages(messages: Any) -> int:
    """Checks the conversation; returns its size in tokens."""
    _require(isinstance(messages, list) and messages != [],
             "Invalid 'messages': expected a non-empty array of messages.", "messages")
    open_calls: set[str] = set()
    n_tokens = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        _require(isinstance(message, dict), f"Invalid '{where}': expected an object.", where)
        role = message.get("role")
        _require(role in _ROLES, f"Invalid value for '{where}.role': {role!r}; supported values are "
                                 f"{', '.join(_ROLES)}.", f"{where}.role")
        if open_calls and role != "tool":
            raise _RequestError(400, "An assistant message with 'tool_calls' must be followed by tool messages "
                                     f"responding to each 'tool_call_id'. Missing: {', '.join(sorted(open_calls))}.",
                                param=where)
        content = message.get("content")
        if role == "assistant":
            calls = message.get("tool_calls") or []
            _require(content is not None or bool(calls), f"Invalid '{where}': an assistant message needs 'content' or "
                                                   "'tool_calls'.", where)
            for j, call in enumerate(calls):
                _require(isinstance(call, dict) and isinstance(call.get("id"), str) and call.get("type") == "function"
                         and isinstance(call.get("function"), dict)
                         and isinstance(call["function"].get("name"), str)
                         and isinstance(call["function"].get("arguments"), str),
                         f"Invalid '{where}.tool_calls[{j}]': expected {{id, type: 'function', function: "
                         "{name, arguments (a JSON string)}}.", f"{where}.tool_calls[{j}]")
                open_calls.add(call["id"])
            n_tokens += len(_tokens(_text_content(content, where))) if content is not None else 0
            continue
        _require(content is not None, f"Missing required parameter: '{where}.content'.", f"{where}.content")
        n_tokens += len(_tokens(_text_content(content, where)))
        if role == "tool":
            call_id = message.get("tool_call_id")
            _require(isinstance(call_id, str), f"Missing required parameter: '{where}.tool_call_id'.",
                     f"{where}.tool_call_id")
            _require(call_id in open_calls, f"Invalid parameter: messages with role 'tool' must be a response to a "
                                            f"preceding message with 'tool_calls' (no open call {call_id!r}).",
                     f"{where}.tool_call_id")
            open_calls.discard(call_id)
    return n_tokens


def _validate_tools(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        _require(isinstance(tools, list), "Invalid 'tools': expected an array.", "tools")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            _require(isinstance(tool, dict) and tool.get("type") == "function" and isinstance(function, dict),
                     f"Invalid 'tools[{i}]': expected {{type: 'function', function: {{...}}}}.", f"tools[{i}]")
            name = function.get("name")  # type: ignore[union-attr]
            _require(isinstance(name, str) and bool(_TOOL_NAME.match(name)),
                     f"Invalid 'tools[{i}].function.name': {name!r} does not match '^[a-zA-Z0-9_-]{{1,64}}$'.",
                     f"tools[{i}].function.name")
            parameters = function.get("parameters", {})  # type: ignore[union-attr]
            _require(isinstance(parameters, dict), f"Invalid 'tools[{i}].function.parameters': expected a JSON "
                                                   "schema object.", f"tools[{i}].function.parameters")
            names.add(name)
    choice = body.get("tool_choice")
    if choice is not None:
        named = isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"),
                                                                                             dict)
        _require(choice in ("none", "auto", "required") or named,
                 "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {type: 'function', function: "
                 "{name}}.", "tool_choice")
        _require(choice == "none" or bool(names), "Invalid value for 'tool_choice': 'tool_choice' is only allowed "
                                                  "when 'tools' are specified.", "tool_choice")
        if named:
            _require(choice["function"].get("name") in names,
                     f"Invalid 'tool_choice': no tool named {choice['function'].get('name')!r}.", "tool_choice")
    return names


def _validate(body: Any, models: tuple[str, ...]) -> tuple[int, set[str]]:
    """Checks a chat-completions request as OpenAI does; returns (prompt tokens, tool names)."""
    _require(isinstance(body, dict), "Invalid request body: expected a JSON object.", "body")
    unknown = sorted(set(body) - _OPENAI_PARAMS - _VLLM_PARAMS)
    _require(not unknown, f"Unrecognized request argument supplied: {', '.join(unknown)}",
             unknown[0] if unknown else "")
    _require(isinstance(body.get("model"), str), "you must provide a model parameter", "model")
    if body["model"] not in models:
        raise _RequestError(404, f"The model `{body['model']}` does not exist or you do not have access to it.",
                            param="model", code="model_not_found")
    prompt_tokens = _validate_messages(body.get("messages"))
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    _require(body.get("n", 1) in (1, None), "this server answers n=1 only", "n")
    if "seed" in body and body["seed"] is not None:
        _require(isinstance(body["seed"], int) and not isinstance(body["seed"], bool),
                 "Invalid 'seed': expected an integer.", "seed")
    stop = body.get("stop")
    if stop is not None:
        _require(isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4
                                           and all(isinstance(s, str) and s for s in stop)),
                 "Invalid 'stop': expected a string or an array of at most 4 non-empty strings.", "stop")
    _require(isinstance(body.get("stream", False), bool), "Invalid 'stream': expected a boolean.", "stream")
    if body.get("stream_options") is not None:
        _require(body.get("stream") is True,
                 "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        _require(kind in ("text", "json_object", "json_schema"),
                 "Invalid 'response_format.type': expected 'text', 'json_object' or 'json_schema'.",
                 "response_format.type")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            _require(isinstance(spec, dict) and isinstance(spec.get("name"), str)
                     and isinstance(spec.get("schema", {}), dict),
                     "Invalid 'response_format.json_schema': expected {name, schema}.", "response_format.json_schema")
    return prompt_tokens, _validate_tools(body)


def _answer(reply: Reply, body: dict[str, Any], tool_names: set[str]) -> tuple[str | None, list[dict[str, Any]], str]:
    """(content, tool calls, finish reason) after the request's stop sequences and token limit."""
    calls = list(reply.tool_calls)
    if calls and (body.get("tool_choice") == "none" or any(c.name not in tool_names for c in calls)):
        raise _RequestError(500, "openai_server: the script calls a tool the request does not offer "
                                 f"({', '.join(c.name for c in calls)}; offered: {', '.join(sorted(tool_names))})",
                            kind="server_error")
    content, finish = reply.content, "tool_calls" if calls else "stop"
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    if content:
        cuts = [content.find(s) for s in stops if s in content]
        if cuts:
            content, finish = content[: min(cuts)], "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and len(_tokens(content)) > limit:
            content, finish = "".join(_tokens(content)[:limit]), "length"
    tool_calls = [{"id": c.id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                   "function": {"name": c.name,
                                "arguments": c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments)}}
                  for c in calls]
    return content, tool_calls, reply.finish_reason or finish


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openai-test-server/1"

    @property
    def openai(self) -> OpenAIServer:
        return self.server.openai  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # tests read `requests`; no stderr noise

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._record(None)
        try:
            self._check_auth()
            if self.path.rstrip("/") != "/v1/models":
                raise _RequestError(404, f"Invalid URL (GET {self.path})")
            created = int(time.time())
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model", "created": created,
                                                         "owned_by": "openai-test-server"}
                                                        for m in self.openai.models]})
        except _RequestError as err:
            self._error(err)

    def do_POST(self) -> None:  # noqa: N802
        self._completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._record(body)
        try:
            self._check_auth()
            if self.path.rstrip("/") != "/v1/chat/completions":
                raise _RequestError(404, f"Invalid URL (POST {self.path})")
            if body is None:
                raise _RequestError(400, "We could not parse the JSON body of your request.")
            prompt_tokens, tool_names = _validate(body, self.openai.models)
            item = self.openai._next(body)
            self.openai.sleep(item.delay_s)
            if isinstance(item, Fail):
                self._fail(item)
                return
            content, tool_calls, finish = _answer(item, body, tool_names)
            completion_tokens = len(_tokens(content or "")) + sum(
                len(_tokens(c["function"]["arguments"])) for c in tool_calls)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
            if body.get("stream"):
                self._stream(item, body, content, tool_calls, finish, usage)
            else:
                message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
                if tool_calls:
                    message["tool_calls"] = tool_calls
                self._json(200, {**self._envelope(body, "chat.completion"),
                                 "choices": [{"index": 0, "message": message, "logprobs": None,
                                              "finish_reason": finish}],
                                 "usage": usage})
        except _RequestError as err:
            self._error(err)

    def _record(self, body: Any) -> None:
        self.openai._record(RecordedRequest(self.command, self.path, dict(self.headers.items()), body))

    def _check_auth(self) -> None:
        if self.openai.api_key is not None and self.headers.get("Authorization") != f"Bearer {self.openai.api_key}":
            raise _RequestError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _envelope(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        return {"id": self._completion_id, "object": kind, "created": int(time.time()), "model": body["model"],
                "system_fingerprint": "fp_openai_test_server"}

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: _RequestError) -> None:
        self._json(err.status, {"error": {"message": err.message, "type": err.kind, "param": err.param,
                                          "code": err.code}})

    def _fail(self, fail: Fail) -> None:
        if fail.drop:
            self._drop()
            return
        kind = "server_error" if fail.status >= 500 else (
            "rate_limit_exceeded" if fail.status == 429 else "invalid_request_error")
        headers = {"Retry-After": f"{fail.retry_after:g}"} if fail.retry_after is not None else {}
        self._json(fail.status, {"error": {"message": fail.message, "type": kind, "param": None, "code": None}},
                   headers)

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _stream(self, reply: Reply, body: dict[str, Any], content: str | None, tool_calls: list[dict[str, Any]],
                finish: str, usage: dict[str, int]) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        envelope = self._envelope(body, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            data = {**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}]}
            return {**data, "usage": None} if include_usage else data

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": token}) for token in _tokens(content or "")]
        for index, call in enumerate(tool_calls):
            events.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                                 "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            arguments = call["function"]["arguments"]
            events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i: i + 8]}}]})
                       for i in range(0, len(arguments), 8)]
        events.append(chunk({}, finish))
        if include_usage:
            events.append({**envelope, "choices": [], "usage": usage})

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
        for n, line in enumerate(lines):
            if reply.drop_after_chunks is not None and n >= reply.drop_after_chunks:
                self.wfile.flush()
                self._drop()
                return
            if n:
                self.openai.sleep(reply.chunk_delay_s)
            data = line.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
