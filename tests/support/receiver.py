"""A real HTTP receiver of webhooks on loopback, for tests: it records what arrives and
answers as told (a status, or never), and can go down and come back on the same port."""

import asyncio
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tests.support.processes import free_port
from tests.support.waiting import wait_until


@dataclass
class Received:
    headers: dict[str, str]
    body: str
    at: float = field(default_factory=time.monotonic)


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[Received] = []
        self.status = 200
        self.hang = False  # True: take the request, never answer
        self.delay_s = 0.0  # how long to take before answering
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            body = (await request.body()).decode()
        except ClientDisconnect:
            return  # the sender died mid-request (a SIGKILLed notifier): nothing arrived
        self.received.append(Received(dict(request.headers), body))
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay_s)
        await Response(status_code=self.status)(scope, receive, send)

    async def start(self) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve())
        await wait_until(self._started, timeout_s=10, interval_s=0.01, what="the receiver")

    async def _started(self) -> bool:
        return self._server is not None and self._server.started

    async def stop(self) -> None:
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            await self._serving
            self._server = self._serving = None
