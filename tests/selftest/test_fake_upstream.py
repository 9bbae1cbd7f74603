"""Self-tests of the fake model upstream and the SSE client, directly (no Envoy in between)."""

import base64
import http.client
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.harness.fake_upstream import FakeUpstream, Script
from tests.harness.rawhttp import RawConnection
from tests.harness.sse import BadStatus, SSEParser, SSEStream, TruncatedStream, stream_events

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


@pytest.fixture
def fake():
    with FakeUpstream() as f:
        yield f


def datas(events):
    return [json.loads(d) for _, d, _ in events if d != "[DONE]"]


# --- endpoint shapes ---

def test_chat_completion_shape(fake):
    fake.push(Script(content="Hi there"))
    r = requests.post(fake.url + "/v1/chat/completions", json={**CHAT, "model": "my-model"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "my-model" and isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},
                                "logprobs": None, "finish_reason": "stop"}]
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0


def test_chat_stream_two_choices_with_usage(fake):
    fake.push(Script(content="Hello world!", choices=2, usage={"prompt_tokens": 5, "completion_tokens": 6,
                                                               "total_tokens": 11}))
    events = stream_events(fake.url + "/v1/chat/completions",
                           {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert all(e is None for e, _, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = datas(events)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"role": "assistant", "content": ""}] * 2
    assert [c["choices"][0]["index"] for c in chunks[:2]] == [0, 1]
    text = {0: "", 1: ""}
    for c in chunks[2:-3]:
        (choice,) = c["choices"]
        assert choice["finish_reason"] is None
        text[choice["index"]] += choice["delta"]["content"]
    assert text == {0: "Hello world!", 1: "Hello world!"}
    finals = [c["choices"][0] for c in chunks[-3:-1]]
    assert finals == [{"index": i, "delta": {}, "logprobs": None, "finish_reason": "stop"} for i in (0, 1)]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 11


def test_chat_stream_explicit_chunks_and_choice_contents(fake):
    fake.push(Script(chunks=["a", "bc", "d"]))
    events = stream_events(fake.url + "/v1/chat/completions", {**CHAT, "stream": True})
    deltas = [c["choices"][0]["delta"].get("content") for c in datas(events)]
    assert deltas == ["", "a", "bc", "d", None]
    assert "usage" not in datas(events)[0]  # only with include_usage, as OpenAI does

    fake.push(Script(choices=2, choice_contents=["first", "second choice"]))
    r = requests.post(fake.url + "/v1/chat/completions", json=CHAT).json()
    assert [c["message"]["content"] for c in r["choices"]] == ["first", "second choice"]


def test_responses_stream_and_non_stream(fake):
    fake.push(Script(chunks=["Hel", "lo"]))
    events = stream_events(fake.url + "/v1/responses", {"model": "gpt-4o", "input": "hi", "stream": True})
    kinds = [e for e, _, _ in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    objs = datas(events)
    assert [o["type"] for o in objs] == kinds
    assert [o["sequence_number"] for o in objs] == list(range(len(objs)))
    deltas = [o for o in objs if o["type"] == "response.output_text.delta"]
    assert "".join(d["delta"] for d in deltas) == "Hello"
    assert all({"item_id", "output_index", "content_index"} <= d.keys() for d in deltas)
    completed = objs[-1]["response"]
    assert completed["status"] == "completed" and completed["usage"]["output_tokens"] == 2
    assert completed["output"][0]["content"][0]["text"] == "Hello"

    fake.push(Script(content="plain"))
    r = requests.post(fake.url + "/v1/responses", json={"model": "gpt-4o", "input": "hi"}).json()
    assert r["object"] == "response" and r["model"] == "gpt-4o"
    assert r["output"][0]["content"][0]["text"] == "plain"


def test_embeddings_string_list_and_base64(fake):
    one = requests.post(fake.url + "/v1/embeddings", json={"model": "e", "input": "hello"}).json()
    assert one["object"] == "list" and one["model"] == "e" and one["usage"]["prompt_tokens"] > 0
    (item,) = one["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert all(isinstance(x, float) for x in item["embedding"])

    many = requests.post(fake.url + "/v1/embeddings", json={"model": "e", "input": ["hello", "world"]}).json()
    assert [d["index"] for d in many["data"]] == [0, 1]
    assert many["data"][0]["embedding"] == item["embedding"]  # deterministic per input

    b64 = requests.post(fake.url + "/v1/embeddings",
                        json={"model": "e", "input": "hello", "encoding_format": "base64"}).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == item["embedding"]


def test_models_configurable():
    with FakeUpstream(models=["a", "b"]) as fake:
        body = requests.get(fake.url + "/v1/models").json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["a", "b"]
        assert all(m["object"] == "model" and "created" in m and "owned_by" in m for m in body["data"])
        fake.push(Script(models=["c"]))
        assert [m["id"] for m in requests.get(fake.url + "/v1/models").json()["data"]] == ["c"]


def test_anthropic_messages(fake):
    fake.push(Script(content="Bonjour"))
    r = requests.post(fake.url + "/v1/messages", json={"model": "claude-x", "max_tokens": 10,
                                                        "messages": [{"role": "user", "content": "hi"}]}).json()
    assert r["type"] == "message" and r["role"] == "assistant" and r["model"] == "claude-x"
    assert r["content"] == [{"type": "text", "text": "Bonjour"}] and r["stop_reason"] == "end_turn"
    assert set(r["usage"]) == {"input_tokens", "output_tokens"}

    fake.push(Script(chunks=["Bon", "jour"]))
    events = stream_events(fake.url + "/v1/messages", {"model": "claude-x", "stream": True, "messages": []})
    kinds = [e for e, _, _ in events]
    assert kinds == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    objs = datas(events)
    assert [o["type"] for o in objs] == kinds
    assert [o["delta"] for o in objs if o["type"] == "content_block_delta"] == [
        {"type": "text_delta", "text": "Bon"}, {"type": "text_delta", "text": "jour"}]
    assert objs[6]["delta"]["stop_reason"] == "end_turn" and objs[6]["usage"]["output_tokens"] == 2


def test_unknown_path_is_openai_shaped_404(fake):
    r = requests.post(fake.url + "/v2/nothing", json={})
    assert r.status_code == 404 and r.json()["error"]["message"]


def test_scripted_status_and_body(fake):
    fake.push(Script(status=429, headers={"Retry-After": "3"}))
    r = requests.post(fake.url + "/v1/chat/completions", json=CHAT)
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"

    fake.push(Script(status=529))
    r = requests.post(fake.url + "/v1/messages", json={"stream": True})
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"

    fake.push(Script(status=201, body=b"not json", headers={"content-type": "text/plain"}))
    r = requests.post(fake.url + "/v1/chat/completions", json=CHAT)
    assert (r.status_code, r.content, r.headers["content-type"]) == (201, b"not json", "text/plain")


def test_scripts_are_fifo_then_default(fake):
    fake.default = Script(content="default")
    fake.push(Script(content="one"), Script(content="two"))
    got = [requests.post(fake.url + "/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]["content"]
           for _ in range(3)]
    assert got == ["one", "two", "default"]


# --- streaming mechanics ---

def test_raw_chunks_arrive_as_separate_chunks_in_order(fake):
    euro = "€".encode()
    raw = [b'data: {"choices":[{"delta":{"content":"a', euro[:1], euro[1:] + b'"}}]}\n', b"\ndata: [DONE]\n\n"]
    fake.push(Script(raw_chunks=raw))
    with RawConnection("127.0.0.1", fake.port) as conn:
        resp = conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}).encode())
    assert resp.status == 200 and resp.complete
    assert resp.headers["transfer-encoding"] == "chunked"
    assert [c for c, _ in resp.chunks] == raw
    assert len(fake.sent_times) == len(raw)


def test_sse_parser_handles_any_split():
    stream = ("\ufeffevent: a\r\ndata: x\r\ndata: y€\r\n\r\n: comment\n\ndata:z\rid: 7\r\r"
              "data: ignored at eof").encode()
    for step in (1, 2, 3, len(stream)):
        p = SSEParser()
        got = [e for i in range(0, len(stream), step) for e in p.feed(stream[i:i + step], t=float(i))]
        assert [(e.event, e.data, e.id) for e in got] == [("a", "x\ny€", None), (None, "z", "7")]
        assert p.pending  # the unterminated last event is not dispatched
    assert got[0].t <= got[1].t


def test_events_arrive_one_by_one(fake):
    fake.push(Script(chunks=["a", "b", "c"], delay_s=0.1))
    events = stream_events(fake.url + "/v1/chat/completions", {**CHAT, "stream": True})
    sent = fake.sent_times
    assert len(sent) == len(events) == 6  # role, 3 deltas, finish, [DONE]
    arrived = [t for _, _, t in events]
    for k in range(len(events)):
        assert arrived[k] >= sent[k]
        if k:
            # Event k-1 was at the client before event k left the server: nothing was buffered.
            assert arrived[k - 1] < sent[k]


def test_first_delay_precedes_first_event(fake):
    fake.push(Script(chunks=["a"], first_delay_s=0.05))
    with SSEStream(fake.url + "/v1/chat/completions", {**CHAT, "stream": True}) as s:
        assert s.status == 200  # headers come before the delay, like a real time-to-first-token
        events = list(s)
    assert events[0].t >= fake.sent_times[0]


def test_error_after_openai(fake):
    fake.push(Script(chunks=["a", "b", "c", "d"], error_after=3))
    events = stream_events(fake.url + "/v1/chat/completions", {**CHAT, "stream": True})
    assert len(events) == 4 and "[DONE]" not in [d for _, d, _ in events]
    err = json.loads(events[-1][1])["error"]
    assert err["type"] == "server_error" and err["message"] and "code" in err


def test_error_after_anthropic_and_responses(fake):
    fake.push(Script(error_after=2))
    events = stream_events(fake.url + "/v1/messages", {"stream": True})
    assert [e for e, _, _ in events] == ["message_start", "content_block_start", "error"]
    assert json.loads(events[-1][1]) == {"type": "error",
                                         "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake.push(Script(error_after=1))
    events = stream_events(fake.url + "/v1/responses", {"stream": True})
    assert [e for e, _, _ in events] == ["response.created", "error"]
    assert json.loads(events[-1][1])["sequence_number"] == 1


def test_abort_after_cuts_the_stream(fake):
    fake.push(Script(abort_after=2))
    with pytest.raises(TruncatedStream) as exc:
        stream_events(fake.url + "/v1/chat/completions", {**CHAT, "stream": True})
    assert len(exc.value.events) == 2

    fake.push(Script(raw_chunks=[b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"], abort_after=1))
    with RawConnection("127.0.0.1", fake.port) as conn:
        resp = conn.request("POST", "/v1/chat/completions", b"{}")
    assert not resp.complete and [c for c, _ in resp.chunks] == [b"data: 1\n\n"]

    fake.push(Script(abort_after=0))  # non-streamed: the connection closes before any response
    with pytest.raises(requests.ConnectionError):
        requests.post(fake.url + "/v1/chat/completions", json=CHAT)


def test_bad_status_from_stream_events(fake):
    fake.push(Script(status=500))
    with pytest.raises(BadStatus) as exc:
        stream_events(fake.url + "/v1/chat/completions", {**CHAT, "stream": True})
    assert exc.value.status == 500 and json.loads(exc.value.body)["error"]["type"] == "server_error"


# --- recording and connections ---

def test_requests_are_recorded(fake):
    requests.post(fake.url + "/v1/chat/completions?x=1", json=CHAT, headers={"X-Test": "yes"})
    requests.get(fake.url + "/v1/models")
    first, second = fake.received
    assert (first.method, first.path) == ("POST", "/v1/chat/completions?x=1")
    assert first.headers["x-test"] == "yes" and first.headers["content-type"] == "application/json"
    assert first.json == CHAT and json.loads(first.body) == CHAT
    assert (second.method, second.body, second.json) == ("GET", b"", None)
    assert fake.last() is second
    fake.clear()
    assert fake.received == []


def test_chunked_request_body_is_read_fully(fake):
    body = json.dumps(CHAT).encode()
    with RawConnection("127.0.0.1", fake.port) as conn:
        resp = conn.request("POST", "/v1/chat/completions", chunked_body=[body[:5], body[5:17], body[17:]])
        assert resp.status == 200 and json.loads(resp.body)["object"] == "chat.completion"
        # The connection is still in sync: a second request on it works.
        assert conn.request("GET", "/v1/models").status == 200
    assert fake.received[0].body == body and fake.received[0].json == CHAT


def test_keep_alive_across_requests(fake):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}))
        streamed = conn.getresponse()
        assert streamed.getheader("transfer-encoding") == "chunked" and streamed.getheader("content-length") is None
        assert streamed.read().endswith(b"data: [DONE]\n\n")
        sock = conn.sock
        conn.request("POST", "/v1/chat/completions", json.dumps(CHAT))
        assert conn.getresponse().read()
        assert conn.sock is sock
    finally:
        conn.close()
    first, second = fake.received
    assert first.peer == second.peer


def test_stop_closes_idle_keep_alive_connections():
    fake = FakeUpstream()
    conn = RawConnection("127.0.0.1", fake.port)
    assert conn.request("GET", "/v1/models").status == 200
    fake.stop()
    with pytest.raises((ConnectionError, OSError)):
        conn.request("GET", "/v1/models")
    conn.close()


# --- CLI ---

@pytest.mark.parametrize("argv", [["tests/harness/fake_upstream.py"], ["-m", "tests.harness.fake_upstream"]])
def test_cli_prints_port_and_serves(argv):
    proc = subprocess.Popen([sys.executable, *argv, "--port", "0", "--print-port", "--model", "m1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": ""})
    try:
        port = int(proc.stdout.readline())
        r = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        assert [m["id"] for m in r.json()["data"]] == ["m1"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
