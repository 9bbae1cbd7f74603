"""Client side of Server-Sent Events for the end-to-end tests.

`SSEParser` is incremental (feed it bytes as they arrive, in any split), and `SSEStream` /
`stream_events` read a streaming HTTP response piece by piece with `http.client`, stamping each
event with the monotonic time its last byte arrived, so a test can prove events arrive one by one
(compare with `FakeUpstream.sent_times`; both use time.monotonic(), which is system-wide).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterator

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass
class Event:
    event: str | None  # the `event:` field; None when the event had none (OpenAI chat)
    data: str  # data lines joined with "\n"
    t: float  # time.monotonic() when the bytes completing the event arrived
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEParser:
    """Incremental SSE parser following the WHATWG event-stream rules."""

    def __init__(self) -> None:
        self._buf = b""
        self._first = True
        self._reset()

    def _reset(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None

    @property
    def pending(self) -> bool:
        """True if bytes of an unfinished event are buffered (e.g. the stream was cut)."""
        return bool(self._buf or self._data or self._event is not None)

    def feed(self, chunk: bytes, t: float | None = None) -> list[Event]:
        t = time.monotonic() if t is None else t
        self._buf += chunk
        if self._first:  # a leading byte order mark is dropped, even if it arrives split
            if len(self._buf) < 3 and _BOM.startswith(self._buf):
                return []
            self._first = False
            self._buf = self._buf.removeprefix(_BOM)
        events = []
        while m := _EOL.search(self._buf):
            if m.group() == b"\r" and m.end() == len(self._buf):
                break  # may be the first half of a CRLF split across reads
            # Only whole lines are decoded, so a UTF-8 sequence split across reads stays intact.
            line = self._buf[:m.start()].decode("utf-8", errors="replace")
            self._buf = self._buf[m.end():]
            if event := self._line(line, t):
                events.append(event)
        return events

    def _line(self, line: str, t: float) -> Event | None:
        if not line:
            event = Event(self._event, "\n".join(self._data), t, self._id) if self._data else None
            self._reset()
            return event
        if line.startswith(":"):
            return None  # comment / keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class TruncatedStream(Exception):
    """The response body ended before its framing said it would (e.g. an aborted upstream)."""

    def __init__(self, message: str, events: list | None = None):
        super().__init__(message)
        self.events = events or []


class BadStatus(Exception):
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status, self.headers, self.body = status, headers, body


class SSEStream:
    """One streaming request; iterate it to get `Event`s as they arrive."""

    def __init__(self, url: str, json_body: Any = None, headers: dict[str, str] | None = None,
                 method: str = "POST", timeout: float = 30.0):
        u = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
        body = None if json_body is None else json.dumps(json_body).encode()
        hdrs = {"content-type": "application/json", "accept": "text/event-stream", **(headers or {})}
        self.conn.request(method, (u.path or "/") + (f"?{u.query}" if u.query else ""), body=body, headers=hdrs)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.reads: list[tuple[bytes, float]] = []  # every read, with its arrival time
        self.parser = SSEParser()

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                # read1 returns whatever has arrived (at most one HTTP chunk) instead of filling a buffer.
                data = self.response.read1(65536)
            except http.client.IncompleteRead as e:
                raise TruncatedStream("response body cut short") from e
            t = time.monotonic()
            if not data:
                if self.response.length:  # Content-Length not reached
                    raise TruncatedStream("response body cut short")
                return
            self.reads.append((data, t))
            yield from self.parser.feed(data, t)

    def body(self) -> bytes:
        """The bytes read so far plus the rest of the body."""
        return b"".join(d for d, _ in self.reads) + self.response.read()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SSEStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stream_events(url: str, json_body: Any, headers: dict[str, str] | None = None,
                  timeout: float = 30.0) -> list[tuple[str | None, str, float]]:
    """POST json_body and return [(event, data, arrival_time)] once the stream ends.

    Raises BadStatus for a non-2xx answer and TruncatedStream (with `.events` so far) when the
    body is cut short.
    """
    with SSEStream(url, json_body, headers, timeout=timeout) as stream:
        if not 200 <= stream.status < 300:
            raise BadStatus(stream.status, stream.headers, stream.response.read())
        events: list[tuple[str | None, str, float]] = []
        try:
            for e in stream:
                events.append((e.event, e.data, e.t))
        except TruncatedStream as exc:
            exc.events = events
            raise
        return events
