"""The bench's webhook receiver: a real HTTP/1.1 server on loopback that answers every
request 204 and counts them, at the least CPU a server can take.

It stands in for a receiver on another machine, which would take no CPU from this one:
the tests' receiver (uvicorn and Starlette, recording every request for its checks) cost
0.23 ms of this machine's CPU per delivery, a third of what the notifier itself did,
taken from the drain being measured. Here the request is parsed by httptools (what
uvicorn parses with) and answered straight from the protocol.
"""

import asyncio

import httptools

from tests.support.processes import free_port

ANSWER = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


class LeanReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host="127.0.0.1", port=self.port
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


class _Connection(asyncio.Protocol):
    """One kept-alive connection: each complete request is counted and answered."""

    def __init__(self, receiver: LeanReceiver) -> None:
        self._receiver = receiver
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            assert self._transport is not None
            self._transport.close()

    def on_message_complete(self) -> None:  # httptools' callback
        self._receiver.received += 1
        assert self._transport is not None
        self._transport.write(ANSWER)
