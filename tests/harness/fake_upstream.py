"""Scriptable fake model upstream (OpenAI and Anthropic wire formats) for Cordon's end-to-end tests.

It is the only fake in those tests: a real Envoy sits between the test client and this server.
Tests queue `Script`s to shape the next responses and inspect `.received` afterwards.

Streams use chunked transfer encoding with one HTTP chunk per SSE event (or per scripted raw
chunk), written and flushed separately, so chunk boundaries are under the test's control.

CLI: `python -m tests.harness.fake_upstream --port 0 --print-port` (or run this file directly)
serves until killed; with --print-port the bound port is the first line on stdout.
Only the standard library is used so the file runs anywhere.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import itertools
import json
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
DEFAULT_CONTENT = "Hello! This is the fake upstream speaking."
STREAM_ERROR_MESSAGE = "The server had an error while processing your request."


@dataclass
class Script:
    """How to answer one request. Every field is optional."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)  # added to / overriding the defaults
    body: bytes | str | dict | list | None = None  # sent verbatim as the whole response
    content: str = DEFAULT_CONTENT
    chunks: list[str] | None = None  # one text piece per delta event
    raw_chunks: list[bytes] | None = None  # exact HTTP chunks of a stream, replacing generated SSE
    delay_s: float = 0.0  # sleep before every event/chunk but the first
    first_delay_s: float = 0.0  # sleep before the first event (stream) or the response (non-stream)
    choices: int = 1  # OpenAI chat only
    choice_contents: list[str] | None = None  # per-choice text, overrides content/chunks
    error_after: int | None = None  # stream: after N events send a provider-shaped error event
    abort_after: int | None = None  # stream: after N events close the socket; non-stream: close at once
    usage: dict | None = None  # replaces the computed usage object verbatim
    models: list[str] | None = None  # GET /v1/models

    def pieces(self, choice: int = 0) -> list[str]:
        if self.choice_contents is not None:
            return _split(self.choice_contents[choice])
        if self.chunks is not None:
            return list(self.chunks)
        return _split(self.content)


@dataclass
class Received:
    method: str
    path: str  # as requested, query string included
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    json: Any  # parsed body, or None when it is not JSON
    peer: tuple[str, int] = ("", 0)  # client address: equal peers mean one reused connection


class FakeUpstream:
    def __init__(self, models: list[str] | None = None, default: Script | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.models = list(models or DEFAULT_MODELS)
        self.default = default or Script()
        self._lock = threading.Lock()
        self._scripts: deque[Script] = deque()
        self._received: list[Received] = []
        self._sent_times: list[float] = []
        self._conns: set[socket.socket] = set()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-upstream-{self.port}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *scripts: Script) -> None:
        """Queue one-shot scripts, consumed in order by the next requests."""
        with self._lock:
            self._scripts.extend(scripts)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def last(self) -> Received:
        with self._lock:
            if not self._received:
                raise AssertionError("the fake upstream has received no request")
            return self._received[-1]

    def clear(self) -> None:
        """Forget received requests, queued scripts and send times."""
        with self._lock:
            self._received.clear()
            self._scripts.clear()
            self._sent_times = []

    @property
    def sent_times(self) -> list[float]:
        """time.monotonic() just before each event/chunk of the latest stream was written."""
        with self._lock:
            return list(self._sent_times)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        # Idle keep-alive connections would otherwise keep answering after stop(); tests that
        # stop the upstream want it gone.
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FakeUpstream:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- used by the handler threads ---

    def _next_script(self) -> Script:
        with self._lock:
            return self._scripts.popleft() if self._scripts else self.default

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def _new_stream(self) -> list[float]:
        with self._lock:
            self._sent_times = []
            return self._sent_times

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._conns.add if alive else self._conns.discard)(conn)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of new connections from two Envoy workers
    # overflowed it, and a dropped SYN outlived the clusters' 1 s connect timeout (Envoy's 503).
    request_queue_size = 128
    fake: FakeUpstream

    def handle_error(self, request, client_address):
        # A client (Envoy) hanging up is routine in these tests; anything else is a bug worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy expects from its upstreams
    # The head and each chunk are separate writes; with Nagle on, a write waits for the ACK of
    # the one before, which Envoy may delay by up to 40 ms: latency benches then measure TCP's
    # timers, not the filter. Model providers' servers send without delay too.
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return "fake-upstream"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def setup(self):
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def do_GET(self):
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self):
        fake = self.server.fake
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            return self._send(400, _openai_error(400, "malformed chunked request body"), {})
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        fake._record(Received(self.command, self.path, headers, raw, parsed, self.client_address[:2]))

        script = fake._next_script()
        route = self.path.split("?", 1)[0]
        flavor = {"/v1/messages": "anthropic", "/v1/responses": "responses"}.get(route, "openai")
        req = parsed if isinstance(parsed, dict) else {}
        generate = _ROUTES.get((self.command, route))

        if script.abort_after is not None and not (script.raw_chunks is not None or req.get("stream")):
            return self._abort()
        if script.body is not None:
            body = script.body
            if isinstance(body, (dict, list)):
                body = _dumps(body)
            return self._send(script.status, body.encode() if isinstance(body, str) else body, script.headers,
                              delay=script.first_delay_s)
        if script.raw_chunks is not None:
            return self._stream(script, flavor, list(script.raw_chunks))
        if generate is None:
            return self._send(404, _openai_error(404, f"Unknown request URL: {self.command} {route}"),
                              script.headers)
        if script.status >= 400:
            error = (_anthropic_error if flavor == "anthropic" else _openai_error)(script.status, "scripted error")
            return self._send(script.status, error, script.headers, delay=script.first_delay_s)
        result = generate(fake, script, req)
        if isinstance(result, list):
            return self._stream(script, flavor, result)
        self._send(script.status, _dumps(result).encode(), script.headers, delay=script.first_delay_s)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk data
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _head(self, status: int, defaults: dict[str, str], overrides: dict[str, str]) -> None:
        self.send_response(status)
        merged = {k.lower(): v for k, v in defaults.items()}
        merged.update({k.lower(): v for k, v in overrides.items()})
        for name, value in merged.items():
            self.send_header(name, str(value))
        self.end_headers()

    def _send(self, status: int, body: bytes, headers: dict[str, str], delay: float = 0.0) -> None:
        if delay:
            time.sleep(delay)
        self._head(status, {"content-type": "application/json", "content-length": str(len(body))}, headers)
        self.wfile.write(body)

    def _stream(self, script: Script, flavor: str, events: list[bytes]) -> None:
        if script.error_after is not None:
            events = events[:script.error_after] + [_stream_error(flavor, script.error_after)]
        times = self.server.fake._new_stream()
        self._head(script.status, {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
                                   "transfer-encoding": "chunked"}, script.headers)
        try:
            for i, event in enumerate(events):
                if i == script.abort_after:
                    break
                delay = script.first_delay_s if i == 0 else script.delay_s
                if delay:
                    time.sleep(delay)
                if not event:
                    continue  # an empty chunk would be read as the end of the body
                times.append(time.monotonic())  # taken before the write so it never trails the arrival
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            if script.abort_after is not None:
                return self._abort()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client (Envoy) went away mid-stream

    def _abort(self) -> None:
        """Close the connection without finishing the response (no terminating chunk)."""
        self.wfile.flush()
        try:
            # shutdown, not an RST: bytes already written must still reach the peer.
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True


# --- response generators: return a dict (non-stream JSON) or a list of SSE events (stream) ---

def _chat(fake: FakeUpstream, s: Script, req: dict) -> dict | list[bytes]:
    model = req.get("model", "gpt-4o-mini")
    cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
    pieces = [s.pieces(i) for i in range(max(1, s.choices))]
    usage = s.usage or _openai_usage(_prompt_tokens(req), sum(map(len, pieces)))
    if not req.get("stream"):
        return {"id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": i, "message": {"role": "assistant", "content": "".join(p)},
                             "logprobs": None, "finish_reason": "stop"} for i, p in enumerate(pieces)],
                "usage": usage, "system_fingerprint": None}

    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))

    def chunk(choices: list, **extra) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
               "system_fingerprint": None, "choices": choices}
        if include_usage:
            obj["usage"] = None  # as OpenAI does: null on every chunk but the last
        return _data(obj | extra)

    def choice(i: int, delta: dict, finish: str | None = None) -> dict:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [chunk([choice(i, {"role": "assistant", "content": ""})]) for i in range(len(pieces))]
    for k in range(max(map(len, pieces))):  # choices interleave, one choice per chunk, like n > 1
        events += [chunk([choice(i, {"content": p[k]})]) for i, p in enumerate(pieces) if k < len(p)]
    events += [chunk([choice(i, {}, "stop")]) for i in range(len(pieces))]
    if include_usage:
        events.append(chunk([], usage=usage))
    return events + [b"data: [DONE]\n\n"]


def _responses(fake: FakeUpstream, s: Script, req: dict) -> dict | list[bytes]:
    model = req.get("model", "gpt-4o-mini")
    rid, mid, created = "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex, int(time.time())
    pieces = s.pieces()
    text = "".join(pieces)
    prompt = _prompt_tokens(req)
    usage = s.usage or {"input_tokens": prompt, "output_tokens": len(pieces), "total_tokens": prompt + len(pieces)}

    def part(t: str) -> dict:
        return {"type": "output_text", "text": t, "annotations": []}

    def item(status: str, content: list) -> dict:
        return {"id": mid, "type": "message", "status": status, "role": "assistant", "content": content}

    def response(status: str, output: list, usage: dict | None) -> dict:
        return {"id": rid, "object": "response", "created_at": created, "status": status, "model": model,
                "output": output, "usage": usage}

    done = response("completed", [item("completed", [part(text)])], usage)
    if not req.get("stream"):
        return done
    seq = itertools.count()

    def ev(kind: str, **fields) -> bytes:
        return _event(kind, {"type": kind, "sequence_number": next(seq), **fields})

    at = {"item_id": mid, "output_index": 0, "content_index": 0}
    return [ev("response.created", response=response("in_progress", [], None)),
            ev("response.in_progress", response=response("in_progress", [], None)),
            ev("response.output_item.added", output_index=0, item=item("in_progress", [])),
            ev("response.content_part.added", **at, part=part("")),
            *[ev("response.output_text.delta", **at, delta=p, logprobs=[]) for p in pieces],
            ev("response.output_text.done", **at, text=text, logprobs=[]),
            ev("response.content_part.done", **at, part=part(text)),
            ev("response.output_item.done", output_index=0, item=item("completed", [part(text)])),
            ev("response.completed", response=done)]


def _messages(fake: FakeUpstream, s: Script, req: dict) -> dict | list[bytes]:
    model = req.get("model", "claude-sonnet-4-5")
    mid = "msg_" + uuid.uuid4().hex[:24]
    pieces = s.pieces()
    usage = s.usage or {"input_tokens": _prompt_tokens(req), "output_tokens": len(pieces)}

    def message(content: list, stop: str | None, usage: dict) -> dict:
        return {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": None, "usage": usage}

    if not req.get("stream"):
        return message([{"type": "text", "text": "".join(pieces)}], "end_turn", usage)
    start_usage = {"input_tokens": usage.get("input_tokens"), "output_tokens": 1}
    return [_event("message_start", {"type": "message_start", "message": message([], None, start_usage)}),
            _event("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
            _event("ping", {"type": "ping"}),
            *[_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": p}}) for p in pieces],
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": usage.get("output_tokens")}}),
            _event("message_stop", {"type": "message_stop"})]


def _embeddings(fake: FakeUpstream, s: Script, req: dict) -> dict:
    inp = req.get("input", "")
    # A string, a token array, a list of strings or a list of token arrays.
    items = [inp] if isinstance(inp, str) or (inp and isinstance(inp[0], int)) else list(inp)
    dims = int(req.get("dimensions") or 8)
    data = []
    for i, x in enumerate(items):
        text = x if isinstance(x, str) else _dumps(x)
        # Deterministic per input; round-tripped through float32 so JSON and base64 agree.
        digest = hashlib.shake_256(text.encode()).digest(2 * dims)
        packed = struct.pack(f"<{dims}f", *(int.from_bytes(digest[2 * j:2 * j + 2], "big") / 32767.5 - 1
                                            for j in range(dims)))
        # The OpenAI SDKs ask for base64 by default.
        vector = (base64.b64encode(packed).decode() if req.get("encoding_format") == "base64"
                  else list(struct.unpack(f"<{dims}f", packed)))
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(_tokens(x) if isinstance(x, str) else len(x) for x in items)
    return {"object": "list", "data": data, "model": req.get("model", "text-embedding-3-small"),
            "usage": s.usage or {"prompt_tokens": tokens, "total_tokens": tokens}}


def _models(fake: FakeUpstream, s: Script, req: dict) -> dict:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "openai"}
                                       for m in (s.models if s.models is not None else fake.models)]}


_ROUTES = {("POST", "/v1/chat/completions"): _chat, ("POST", "/v1/responses"): _responses,
           ("POST", "/v1/messages"): _messages, ("POST", "/v1/embeddings"): _embeddings,
           ("GET", "/v1/models"): _models}


# --- wire helpers ---

def _split(text: str, size: int = 4) -> list[str]:
    # Splits code points, never UTF-8 bytes: byte-level splits are what raw_chunks are for.
    return [text[i:i + size] for i in range(0, len(text), size)]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))  # compact, as the providers send it


def _data(obj: Any) -> bytes:
    return b"data: " + _dumps(obj).encode() + b"\n\n"


def _event(kind: str, obj: Any) -> bytes:
    return f"event: {kind}\n".encode() + _data(obj)


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _prompt_tokens(req: dict) -> int:
    """A rough count (4 chars a token) over every string of the prompt-carrying fields."""
    def strings(x: Any):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)
    return _tokens("".join(strings([req.get(k) for k in ("messages", "input", "system", "prompt", "instructions")])))


def _openai_usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


_OPENAI_TYPES = {429: ("requests", "rate_limit_exceeded"), 401: ("invalid_request_error", "invalid_api_key"),
                 404: ("invalid_request_error", "unknown_url")}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error"}


def _openai_error(status: int, message: str) -> bytes:
    kind, code = _OPENAI_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return _dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def _anthropic_error(status: int, message: str) -> bytes:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return _dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def _stream_error(flavor: str, sequence_number: int) -> bytes:
    if flavor == "anthropic":
        return _event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    if flavor == "responses":
        return _event("error", {"type": "error", "code": "server_error", "message": STREAM_ERROR_MESSAGE,
                                "param": None, "sequence_number": sequence_number})
    return _data({"error": {"message": STREAM_ERROR_MESSAGE, "type": "server_error", "param": None, "code": None}})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--print-port", action="store_true", help="print the bound port as the first stdout line")
    ap.add_argument("--model", action="append", dest="models", help="model for /v1/models (repeatable)")
    ap.add_argument("--content", default=DEFAULT_CONTENT, help="assistant text of every response")
    ap.add_argument("--delay-s", type=float, default=0.0, help="sleep between streamed events")
    args = ap.parse_args(argv)
    # Before the port is printed: a caller may stop us as soon as it has read it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fake = FakeUpstream(models=args.models, default=Script(content=args.content, delay_s=args.delay_s),
                        host=args.host, port=args.port)
    if args.print_port:
        print(fake.port, flush=True)
    print(f"fake upstream listening on http://{args.host}:{fake.port}", file=sys.stderr, flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
