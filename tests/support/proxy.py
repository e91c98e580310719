"""A TCP proxy the API and workers connect through, so a test can cut PostgreSQL or RabbitMQ
and bring it back without touching the real servers."""

import asyncio
import contextlib
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from shared.settings import Settings


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen (on the same port as before, after a cut)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one, as a crashed server would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()


def through(
    settings: Settings, *, broker: TcpProxy | None = None, db: TcpProxy | None = None
) -> Settings:
    """The same settings, with the broker and/or the database reached through a proxy."""
    update = {}
    if broker is not None:
        parts = urlsplit(settings.amqp_url)
        update["amqp_url"] = parts._replace(
            netloc=f"{parts.username}:{parts.password}@127.0.0.1:{broker.port}"
        ).geturl()
    if db is not None:
        update["database_url"] = (
            make_url(settings.database_url)
            .set(host="127.0.0.1", port=db.port)
            .render_as_string(hide_password=False)
        )
    return settings.model_copy(update=update)
