"""A minimal HTTP/1.1 client over one plain socket, for what http.client hides: the boundaries of
response chunks (with arrival times), chunked request bodies, and reuse of one connection."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    chunks: list[tuple[bytes, float]] = field(default_factory=list)  # (chunk data, arrival time)
    complete: bool = True  # False if the connection closed before the body's end


class RawConnection:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.host = f"{host}:{port}"

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                chunked_body: list[bytes] | None = None) -> RawResponse:
        """Send one request and read its whole response; the connection stays open afterwards."""
        hdrs = {"host": self.host, **{k.lower(): v for k, v in (headers or {}).items()}}
        if chunked_body is not None:
            hdrs["transfer-encoding"] = "chunked"
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunked_body if c) + b"0\r\n\r\n"
        elif body or method in ("POST", "PUT", "PATCH"):
            hdrs["content-length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.sock.sendall(head.encode() + body)
        return self._read_response(method)

    def _read_response(self, method: str) -> RawResponse:
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionError("connection closed before a response")
        resp = RawResponse(int(status_line.split()[1]), {})
        while (line := self.file.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            resp.headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            return resp
        if "chunked" in resp.headers.get("transfer-encoding", "").lower():
            while True:
                size_line = self.file.readline()
                if not size_line.strip():
                    resp.complete = False
                    break
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while self.file.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                data = self.file.read(size)
                resp.chunks.append((data, time.monotonic()))
                if len(data) < size or self.file.readline() not in (b"\r\n", b"\n"):
                    resp.complete = False
                    break
            resp.body = b"".join(c for c, _ in resp.chunks)
        elif "content-length" in resp.headers:
            length = int(resp.headers["content-length"])
            resp.body = self.file.read(length)
            resp.complete = len(resp.body) == length
        else:
            resp.body = self.file.read()  # delimited by the connection closing
        return resp

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
