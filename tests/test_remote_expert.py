"""Remote experts against a local server that speaks the OpenAI chat-completions protocol."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from openai_server import DEFAULT_MODEL, Fail, OpenAIServer, Reply, ToolCall, openai_server, running_openai_server

from experts.constrained import JsonSchemaConstraint, RegexConstraint
from experts.interface import GenerativeExpert
from experts.remote import RemoteExpert, RemoteExpertError
from flipmoe.errors import FlipmoeInputError

__all__ = ["openai_server"]  # the fixture, used by name below

SEARCH_LOGS = {"type": "function", "function": {
    "name": "search_logs", "description": "Log lines of a service matching a query.",
    "parameters": {"type": "object", "properties": {"service": {"type": "string"}, "query": {"type": "string"}},
                   "required": ["service"]}}}


@pytest.fixture
def expert(openai_server: OpenAIServer) -> Iterator[RemoteExpert]:
    with RemoteExpert("thinkfl", openai_server.base_url, DEFAULT_MODEL, timeout_s=2.0, max_retries=2,
                      backoff=0.01) as remote:
        yield remote


def test_generate_returns_the_answer_and_sends_a_valid_request(openai_server: OpenAIServer,
                                                               expert: RemoteExpert) -> None:
    openai_server.script("cartservice ran out of memory")
    out = expert.generate("OOMKilled x3 in cartservice", task="rca_summary", max_new_tokens=32, seed=5)
    assert isinstance(expert, GenerativeExpert)
    assert (out.text, out.expert, out.finish_reason) == ("cartservice ran out of memory", "thinkfl", "stop")
    assert out.completion_tokens == 5 and out.prompt_tokens > 0
    body = openai_server.completions[-1].body
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "rca_summary" in body["messages"][0]["content"]
    assert (body["model"], body["max_tokens"], body["seed"], body["temperature"]) == (DEFAULT_MODEL, 32, 5, 0.0)


def test_stream_yields_deltas_as_they_arrive(openai_server: OpenAIServer, expert: RemoteExpert) -> None:
    openai_server.script(Fail(503, retry_after=0), Reply("the cache is down\n", chunk_delay_s=0.05))
    started = time.perf_counter()
    deltas = expert.stream("why is checkout slow?")
    first = next(deltas)
    assert time.perf_counter() - started < 0.2, "the first delta arrives before the whole answer is generated"
    assert first + "".join(deltas) == "the cache is down\n"
    assert openai_server.completions[-1].body["stream"] is True


def test_stop_sequences_and_token_limit(openai_server: OpenAIServer, expert: RemoteExpert) -> None:
    openai_server.script("redis-cart\nsecond line", "one two three four five", Reply("a\nb c", chunk_delay_s=0))
    stopped = expert.generate("which pod?", stop=["\n"])
    assert (stopped.text, stopped.finish_reason) == ("redis-cart", "stop")
    assert openai_server.completions[-1].body["stop"] == ["\n"]
    cut = expert.generate("list them", max_new_tokens=2)
    assert (cut.text, cut.finish_reason) == ("one two ", "length")
    assert "".join(expert.stream("which?", stop=["\n"])) == "a"


def test_generate_batch_keeps_the_order_of_prompts(openai_server: OpenAIServer, expert: RemoteExpert) -> None:
    prompts = [f"prompt {i}" for i in range(6)]
    openai_server.script(*[lambda body: Reply(body["messages"][-1]["content"].upper(), delay_s=0.02)] * 6)
    assert [g.text for g in expert.generate_batch(prompts)] == [p.upper() for p in prompts]


def test_tool_calls_round_trip_through_a_conversation(openai_server: OpenAIServer, expert: RemoteExpert) -> None:
    openai_server.script(Reply(content=None, tool_calls=[ToolCall("search_logs", {"service": "cart", "query": "OOM"})]),
                         "cart was OOM-killed three times")
    messages = [{"role": "user", "content": "Why does checkout fail?"}]
    reply = expert.chat(messages, tools=[SEARCH_LOGS], tool_choice="auto")
    assert reply.finish_reason == "tool_calls" and reply.content is None
    (call,) = reply.tool_calls
    assert call.name == "search_logs" and call.parsed_arguments() == {"service": "cart", "query": "OOM"}
    messages += [reply.to_message(), {"role": "tool", "tool_call_id": call.id, "content": "OOMKilled x3"}]
    final = expert.chat(messages, tools=[SEARCH_LOGS])
    assert (final.content, final.tool_calls, final.finish_reason) == ("cart was OOM-killed three times", (), "stop")
    assert openai_server.completions[-1].body["messages"][1]["tool_calls"][0]["id"] == call.id


def test_a_tool_message_without_its_call_is_refused_without_retry(openai_server: OpenAIServer,
                                                                   expert: RemoteExpert) -> None:
    openai_server.script("never sent")
    with pytest.raises(RemoteExpertError, match="HTTP 400.*role 'tool'") as err:
        expert.chat([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "?"}])
    assert err.value.status == 400 and openai_server.pending == 1 and len(openai_server.completions) == 1


def test_retries_after_server_errors_and_dropped_connections(openai_server: OpenAIServer,
                                                              expert: RemoteExpert) -> None:
    openai_server.script(Fail(500), Fail(drop=True), "recovered")
    assert expert.generate("x").text == "recovered"
    assert len(openai_server.completions) == 3
    openai_server.script(Fail(429, "slow down", retry_after=0), Fail(503), Fail(502))
    with pytest.raises(RemoteExpertError, match=r"HTTP 502.*gave up after 3 attempts") as err:
        expert.generate("x")
    assert err.value.status == 502 and err.value.url == f"{openai_server.base_url}/chat/completions"


def test_no_retry_after_a_client_error(openai_server: OpenAIServer, expert: RemoteExpert) -> None:
    openai_server.script(Fail(400, "max_tokens is too large"), "never sent")
    with pytest.raises(RemoteExpertError, match=r"127\.0\.0\.1:\d+/v1/chat/completions answered HTTP 400: "
                                                r"max_tokens is too large"):
        expert.generate("x")
    assert openai_server.pending == 1
    unknown_model = RemoteExpert("other", openai_server.base_url, "no-such-model", max_retries=3)
    with pytest.raises(RemoteExpertError, match="HTTP 404.*no-such-model") as err:
        unknown_model.generate("x")
    assert err.value.status == 404 and len(openai_server.completions) == 2


def test_timeouts_are_retried_then_reported(openai_server: OpenAIServer) -> None:
    impatient = RemoteExpert("slow", openai_server.base_url, DEFAULT_MODEL, timeout_s=0.2, max_retries=1, backoff=0)
    openai_server.script(Reply("late", delay_s=1.0), "in time")
    assert impatient.generate("x").text == "in time"
    openai_server.script(Reply("late", delay_s=1.0), Reply("late", delay_s=1.0))
    started = time.perf_counter()
    with pytest.raises(RemoteExpertError, match=r"timed out after 0.2 s .*gave up after 2 attempts"):
        impatient.generate("x")
    assert time.perf_counter() - started < 1.5


def test_a_stream_that_breaks_off_is_an_error(openai_server: OpenAIServer, expert: RemoteExpert) -> None:
    openai_server.script(Reply("one two three four five six", drop_after_chunks=3))
    received = []
    with pytest.raises(RemoteExpertError, match="broke off|without 'data: \\[DONE\\]'"):
        for delta in expert.stream("x"):
            received.append(delta)
    assert received == ["one ", "two "], "deltas before the break are handed out, and not retried"


def test_constraints_become_structured_output_fields(openai_server: OpenAIServer, expert: RemoteExpert) -> None:
    schema = {"type": "object", "properties": {"service": {"type": "string"}}, "required": ["service"]}
    openai_server.script('{"service": "cart"}', "cart-01")
    assert json.loads(expert.generate("x", constraint=JsonSchemaConstraint(schema)).text) == {"service": "cart"}
    assert openai_server.completions[-1].body["response_format"]["json_schema"]["schema"] == schema
    expert.generate("x", constraint=RegexConstraint(r"[a-z]+-[0-9]{2}"))
    assert openai_server.completions[-1].body["structured_outputs"] == {"regex": r"[a-z]+-[0-9]{2}"}


def test_api_key_from_the_environment_and_config_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_openai_server(models=("thinkfl-7b",), api_key="s3cret") as server:
        monkeypatch.setenv("THINKFL_KEY", "s3cret")
        config = {"kind": "remote", "name": "thinkfl", "base_url": server.url, "model": "thinkfl-7b",
                  "api_key_env": "THINKFL_KEY", "max_retries": 1}
        remote = RemoteExpert.from_config(config)
        assert remote.models() == ["thinkfl-7b"]
        saved = json.dumps(remote.to_config())
        assert "s3cret" not in saved and json.loads(saved)["api_key_env"] == "THINKFL_KEY"
        assert RemoteExpert.from_config(json.loads(saved)).to_config() == remote.to_config()
        keyless = RemoteExpert("thinkfl", server.base_url, "thinkfl-7b")
        with pytest.raises(RemoteExpertError, match="HTTP 401: Incorrect API key"):
            keyless.models()
        monkeypatch.delenv("THINKFL_KEY")
        with pytest.raises(FlipmoeInputError, match="THINKFL_KEY is not set"):
            RemoteExpert.from_config(config)
    with pytest.raises(FlipmoeInputError, match="never store keys"):
        RemoteExpert.from_config({**config, "api_key": "s3cret"})
    with pytest.raises(FlipmoeInputError, match="unknown remote expert config key.*timeout\\b"):
        RemoteExpert.from_config({**config, "timeout": 3})


def test_unreachable_endpoint_names_it() -> None:
    with running_openai_server() as server:
        base_url = server.base_url
    gone = RemoteExpert("gone", base_url, DEFAULT_MODEL, timeout_s=1.0, max_retries=1, backoff=0)
    with pytest.raises(RemoteExpertError, match=f"cannot reach {base_url}/chat/completions"):
        gone.generate("x")


@pytest.mark.parametrize("body, message", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "you must provide a model parameter"),
    ({"model": DEFAULT_MODEL, "messages": []}, "non-empty array"),
    ({"model": DEFAULT_MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "messages\\[0\\].role"),
    ({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
    ({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream_options": {}},
     "only allowed when 'stream' is enabled"),
    ({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 3},
     "Unrecognized request argument supplied: max_new_tokens"),
    ({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"},
     "only allowed when 'tools' are specified"),
])
def test_the_server_validates_requests_as_openai_does(openai_server: OpenAIServer, body: dict, message: str) -> None:
    response = httpx.post(f"{openai_server.base_url}/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert re.search(message, response.json()["error"]["message"])


def test_the_server_streams_tool_calls_and_usage_as_openai_does(openai_server: OpenAIServer) -> None:
    openai_server.script(Reply(content=None, tool_calls=[ToolCall("search_logs", {"service": "cart"}, id="call_1")]))
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "go"}], "tools": [SEARCH_LOGS],
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{openai_server.base_url}/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    fragments = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-2]]
    assert fragments[0]["id"] == "call_1" and fragments[0]["function"]["name"] == "search_logs"
    assert json.loads("".join(f["function"]["arguments"] for f in fragments)) == {"service": "cart"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
