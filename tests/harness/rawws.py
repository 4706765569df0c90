"""A raw WebSocket client for hostile-client tests: it speaks just enough of RFC 6455 and
Engine.IO to connect, and then does what no library would: stops reading (a tiny receive
buffer, never drained), or sends frames of its own making."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from dataclasses import dataclass

import orjson

OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8


@dataclass
class RawWebSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def connect(
        cls, port: int, path: str, *, receive_buffer: int | None = None
    ) -> RawWebSocket:
        """Upgrade ``path`` on 127.0.0.1:``port``; with ``receive_buffer`` the kernel keeps
        only that many unread bytes (and asyncio's reader no more than 4 KB on top)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2048)
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        status = await reader.readline()
        if b" 101 " not in status:
            raise ConnectionError(f"upgrade refused: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    def send_text(self, text: str, *, opcode: int = OPCODE_TEXT) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def read_text(self, timeout: float = 5.0) -> str | None:
        """The next text frame's payload; None once the server closed the connection."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    head = await self.reader.readexactly(2)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(length)
                if opcode == OPCODE_CLOSE:
                    return None
                if opcode == OPCODE_TEXT:
                    return payload.decode()

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """Read (and discard) everything until the server closes; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.transport.abort()


async def connect_socketio(
    port: int,
    namespace: str,
    token: str,
    *,
    auth: dict[str, object] | None = None,
    receive_buffer: int | None = None,
) -> RawWebSocket:
    """A raw Engine.IO WebSocket session connected to ``namespace``, handshake read."""
    ws = await RawWebSocket.connect(
        port, "/socket.io/?EIO=4&transport=websocket", receive_buffer=receive_buffer
    )
    opened = await ws.read_text()
    assert opened is not None and opened.startswith("0"), opened
    ws.send_text(f"40{namespace}," + orjson.dumps({"token": token, **(auth or {})}).decode())
    connected = await ws.read_text()
    assert connected is not None and connected.startswith(f"40{namespace},"), connected
    return ws
