"""A fake charon on a unix socket for stock `swanctl`: it answers every command with
success and records what it got. Running `swanctl --load-all --uri unix://SOCKET` against
it makes strongSwan's own parser read a swanctl.conf, no root and no charon needed."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from vici.protocol import FiniteStream, Message, Packet


class RecordingVici:
    """A fake charon: answers every command with success and records what it got."""

    def __init__(self, path: Path) -> None:
        self._codec = (FiniteStream, Message, Packet)
        self.path = path
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        finite_stream, message, packet = self._codec

        def read(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data

        try:
            while True:
                (length,) = struct.unpack("!I", read(4))
                raw = read(length)
                if raw[0] != packet.CMD_REQUEST:
                    out = bytes([packet.EVENT_CONFIRM])
                else:
                    command = raw[2:2 + raw[1]].decode()
                    body = raw[2 + raw[1]:]
                    msg = message.deserialize(finite_stream(body)) if body else {}
                    self.log.append((command, msg))
                    reply: dict[str, Any] = {"success": "yes"}
                    if command == "get-conns":
                        reply = {"conns": []}
                    elif command in ("get-keys", "get-shared"):
                        reply = {"keys": []}
                    elif command == "get-authorities":
                        reply = {"authorities": []}
                    elif command == "get-pools":
                        reply = {}
                    elif command == "load-key":
                        reply["id"] = hashlib.sha1(msg.get("data", b"")).hexdigest()
                    out = bytes([packet.CMD_RESPONSE]) + message.serialize(reply)
                conn.sendall(struct.pack("!I", len(out)) + out)
        except (EOFError, OSError):
            pass

    def close(self) -> None:
        self.sock.close()
