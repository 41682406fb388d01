"""uvicorn serving the connections the accepting process hands this API process (``infrastructure.dispatch``)."""

import asyncio
import socket
from typing import Any

import uvicorn

from infrastructure.dispatch import HandedConnections


class HandedServer(uvicorn.Server):
    """A uvicorn server with no listening socket of its own: once the application has started, it takes the
    connections handed over on ``channel``; at shutdown it takes no more before finishing those it has."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self._channel = channel
        self._handed: HandedConnections | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up (the application's lifespan) with no listener, then the channel."""
        await super().startup(sockets=[])
        config = self.config

        def protocol() -> Any:
            return config.http_protocol_class(config=config, server_state=self.server_state,  # type: ignore[call-arg]
                                              app_state=self.lifespan.state)

        self._handed = HandedConnections(self._channel, protocol, asyncio.get_running_loop())
        self._handed.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """No more connections, then uvicorn's graceful shutdown of those open."""
        if self._handed is not None:
            await self._handed.closed()
        await super().shutdown(sockets=sockets)
