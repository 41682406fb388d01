"""A minimal asyncio HTTP/1.1 client for load generation.

One :class:`Connection` per virtual user, kept alive between requests and reopened when the server closes
it. Requests are prebuilt bytes (see :func:`build_request`) so the hot loop only writes, then parses the
status line, the few headers that frame the body (``Content-Length``, ``Transfer-Encoding: chunked``,
``Connection``) and the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Connection", "HttpProtocolError", "Target", "build_request"]

_HEAD_END = b"\r\n\r\n"
_CRLF = b"\r\n"
_TRANSPORT_ERRORS = (ConnectionError, asyncio.IncompleteReadError)


class HttpProtocolError(Exception):
    """The server sent something that is not a valid HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go.

    Attributes:
        host: Host name or IP address to connect to.
        port: TCP port.
        host_header: Value of the ``Host`` header (``host`` or ``host:port``).
        base_path: Path prefix of the server, without a trailing slash (usually empty).
    """

    host: str
    port: int
    host_header: str
    base_path: str = ""

    def path(self, path: str) -> str:
        """Return ``path`` (which starts with ``/``) under the server's base path."""
        return self.base_path + path


def build_request(
    target: Target, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> bytes:
    """Build the complete bytes of one HTTP/1.1 request, ready to be written as many times as needed.

    Args:
        target: The server (gives the ``Host`` header and the base path).
        method: HTTP method, e.g. ``"POST"``.
        path: Request path starting with ``/``, with query string if any.
        headers: Extra headers; ``Host``, ``User-Agent``, ``Accept`` and ``Content-Length`` are added.
        body: Request body.

    Returns:
        The request bytes.
    """
    lines = [
        f"{method} {target.path(path)} HTTP/1.1",
        f"Host: {target.host_header}",
        "User-Agent: keyledger-bench/1",
        "Accept: application/json",
    ]
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _header(lower_head: bytes, name: bytes) -> bytes | None:
    """Return the stripped value of header ``name`` (lower case) in a lower-cased response head, or None."""
    start = lower_head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    return lower_head[start : lower_head.find(_CRLF, start)].strip()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked body (RFC 9112 section 7.1), trailers included, and return the decoded bytes."""
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(_CRLF)
        try:
            size = int(line.split(b";", 1)[0], 16)
        except ValueError:
            size = -1
        if size < 0:
            raise HttpProtocolError(f"bad chunk size line {line[:40]!r}")
        if size == 0:
            break
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != _CRLF:
            raise HttpProtocolError("chunk not followed by CRLF")
        parts.append(chunk[:-2])
    while await reader.readuntil(_CRLF) != _CRLF:  # trailer fields, ignored
        pass
    return b"".join(parts)


class Connection:
    """A keep-alive HTTP/1.1 connection to one server, used by one coroutine at a time."""

    __slots__ = ("_reader", "_writer", "target")

    def __init__(self, target: Target) -> None:
        """Create an unconnected connection; it connects on first use.

        Args:
            target: The server to talk to.
        """
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open (or reopen) the TCP connection."""
        self.close()
        self._reader, self._writer = await asyncio.open_connection(self.target.host, self.target.port)

    def close(self) -> None:
        """Close the TCP connection if it is open; the next request reconnects."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one prebuilt request and read its response.

        If the kept-alive connection turns out to have been closed by the server before it answered (no
        byte of a response received), the request is sent once more on a new connection.

        Args:
            data: Request bytes from :func:`build_request`.

        Returns:
            The status code and the (decoded, for chunked) body.

        Raises:
            OSError: The connection could not be opened or broke.
            asyncio.IncompleteReadError: The server closed the connection in the middle of a response.
            HttpProtocolError: The response could not be parsed.
        """
        reader = self._reader
        if reader is None or reader.at_eof():
            return await self._send_fresh(data)
        try:
            self._writer.write(data)  # type: ignore[union-attr]
            return await self._read_response(reader)
        except _TRANSPORT_ERRORS as exc:
            self.close()
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
        except BaseException:
            self.close()
            raise
        return await self._send_fresh(data)  # stale keep-alive connection: retry once

    async def _send_fresh(self, data: bytes) -> tuple[int, bytes]:
        """Connect, send ``data`` and read the response; close on any failure."""
        await self.connect()
        try:
            self._writer.write(data)  # type: ignore[union-attr]
            return await self._read_response(self._reader)  # type: ignore[arg-type]
        except BaseException:
            self.close()
            raise

    async def _read_response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        """Read one response (skipping 1xx interim responses); close the connection if the server asks."""
        while True:
            head = await reader.readuntil(_HEAD_END)
            if head[:5] != b"HTTP/" or head[12:13] not in {b" ", b"\r"}:
                raise HttpProtocolError(f"bad status line {head[:40]!r}")
            try:
                status = int(head[9:12])
            except ValueError:
                raise HttpProtocolError(f"bad status line {head[:40]!r}") from None
            if status >= 200:
                break
        lower = head.lower()
        connection = _header(lower, b"connection")
        if head[5:8] == b"1.0":
            keep_alive = connection is not None and b"keep-alive" in connection
        else:
            keep_alive = connection is None or b"close" not in connection
        encoding = _header(lower, b"transfer-encoding")
        if encoding is not None and b"chunked" in encoding:
            body = await _read_chunked(reader)
        elif (length := _header(lower, b"content-length")) is not None:
            if not length.isdigit():
                raise HttpProtocolError(f"bad Content-Length {length[:20]!r}")
            body = await reader.readexactly(int(length)) if length != b"0" else b""
        elif status in {204, 304}:
            body = b""
        else:  # no framing: the body runs until the server closes the connection
            body = await reader.read()
            keep_alive = False
        if not keep_alive:
            self.close()
        return status, body
