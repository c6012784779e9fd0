"""One end of a control process <-> data plane link: JSON lines over a socket pair.

Either end may ``ask`` (a message with an ``id``; the other end answers with ``op: answer``
and the same id, carrying a ``result`` or an ``error``). Messages each way arrive in the
order they were sent, which the protocol relies on: a data plane has applied ``READY`` for
a model before it reads the answer to its ``load``.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from typing import Any

import orjson

from gateway.errors import GatewayError, ServiceUnavailable
from gateway.workers.wire import Message, error_in, error_out

LINE_LIMIT = 256 << 20
"""Longest message (a snapshot of every ready model, a forwarded /metrics answer)."""


class LinkClosed(ServiceUnavailable):
    """The other end is gone."""


class Link:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._asked: dict[int, asyncio.Future[Any]] = {}
        self.closed = False

    @classmethod
    async def over(cls, sock: socket.socket) -> Link:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        if not self.closed:
            self._writer.write(orjson.dumps(message) + b"\n")

    async def receive(self) -> Message | None:
        """The next message that is not an answer (answers resolve their asks); None once
        the other end has gone."""
        while True:
            try:
                line = await self._reader.readline()
            except (ConnectionError, ValueError):  # reset, or a line over the limit
                line = b""
            if not line:
                self.close()
                return None
            message: Message = orjson.loads(line)
            if message.get("op") != "answer":
                return message
            asked = self._asked.pop(message["id"], None)
            if asked is None or asked.done():
                continue
            if "error" in message:
                asked.set_exception(error_in(message["error"]))
            else:
                asked.set_result(message.get("result"))

    async def ask(self, message: Message) -> Any:
        """The other end's answer to ``message`` (its error raised here)."""
        if self.closed:
            raise LinkClosed("The gateway's control process is gone; retry the request.")
        ask_id = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._asked[ask_id] = answer
        self.send({**message, "id": ask_id})
        try:
            return await answer
        finally:
            self._asked.pop(ask_id, None)

    def answer(self, ask_id: int, result: Any = None, error: GatewayError | None = None) -> None:
        if error is not None:
            self.send({"op": "answer", "id": ask_id, "error": error_out(error)})
        else:
            self.send({"op": "answer", "id": ask_id, "result": result})

    def close(self) -> None:
        """Stop; asks still waiting fail with LinkClosed."""
        if self.closed:
            return
        self.closed = True
        for asked in self._asked.values():
            if not asked.done():
                asked.set_exception(
                    LinkClosed("The gateway's control process is gone; retry the request.")
                )
        self._asked.clear()
        self._writer.close()
