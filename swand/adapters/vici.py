"""An asyncio-native VICI client for charon.

The `vici` package is blocking and cannot mix commands and events on one socket. Its codec
(`vici.protocol.Packet` / `Message`) is pure bytes, so it is reused here over asyncio
streams. Two classes, two connections, because VICI has no request ids:

- `ViciSession`: commands, one at a time (an `asyncio.Lock`). A command that is cancelled
  or times out leaves its reply in flight, which would be read as the answer to the *next*
  command: the connection is therefore *poisoned* and closed. The next `request()`
  reconnects transparently (lazily) to the same URI; `generation` counts connections so a
  caller can notice "new connection: charon may have restarted, re-read everything".
- `ViciEventStream`: a dedicated connection registered for events; `next_event()` blocks
  until one arrives and raises `ViciConnectionError` when charon goes away.

Limits are checked *before sending*, because charon answers an oversized message by
closing the socket and silently drops replies larger than 512 KiB (a client without a
timeout waits forever): a request over 512 KiB, a value over 64 KiB or a name over 255
bytes raises `ViciLimitError` naming the item's key path. Every command read has a timeout,
and a streamed reply has a size cap (`MAX_STREAMED_BYTES`, `MAX_STREAMED_EVENTS`).

URIs as `swanctl --uri`: `unix:///path`, a plain path, or `tcp://host:port`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vici.protocol import FiniteStream, Message, Packet

#: charon's VICI_MESSAGE_SIZE_MAX: the largest packet (after the 4-byte length) it accepts
MAX_MESSAGE = 512 * 1024
#: a value's length is a 16-bit field
MAX_VALUE = 0xFFFF
#: key, section, list, command and event names have an 8-bit length
MAX_NAME = 0xFF

#: the most one streamed reply (``list-sas``, ``list-conns``, ``list-certs``) may hold
#: before the request fails: a peer that streams events without ever answering must not
#: grow memory until the timeout (a fake peer reached 3 GB in 12 s). Measured: a list-sa
#: event of charon 5.9.8 with one CHILD_SA is 840-900 bytes on the wire, so list-sas on a
#: 100,000-SA gateway is 85 MiB (bench/synthetic_vici.py) and decodes to ~6.6 KB of
#: Python objects per SA. 256 MiB is three times that (300,000 such SAs, or 100,000 with
#: three CHILD_SAs each); 500,000 events is five times the SA count.
MAX_STREAMED_BYTES = 256 * 1024 * 1024
MAX_STREAMED_EVENTS = 500_000

_HEADER = struct.Struct("!I")


class ViciError(Exception):
    """Base of every error this module raises."""


class ViciConnectionError(ViciError):
    """The socket is missing, refused, closed, timed out or desynchronised.

    The message names the URI so a log line says which charon was unreachable.
    """


class ViciLimitError(ViciError, ValueError):
    """A request that charon would reject or drop (size limits, unsupported types).

    Raised before anything is sent; the message names the item's path of keys.
    """


class ViciReplyTooLarge(ViciConnectionError):
    """A streamed reply grew past `MAX_STREAMED_EVENTS` / `MAX_STREAMED_BYTES`: the request
    failed and its connection was closed (the rest of the stream is never read)."""


class ViciCommandError(ViciError):
    """charon answered, and the answer was a failure.

    `errmsg` is charon's text (``success = no``), or "unknown command" for CMD_UNKNOWN.
    `reply` is the decoded reply when there was one (it may carry details such as
    ``matches`` or per-item errors).
    """

    def __init__(self, command: str, errmsg: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(f"vici {command}: {errmsg}")
        self.command = command
        self.errmsg = errmsg
        self.reply = reply or {}


# --- encoding -------------------------------------------------------------------------


def _encode_scalar(value: Any, path: str) -> bytes:
    """One VICI value as bytes: str as UTF-8, int as decimal text, bool as yes/no."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, bool):  # before int: bool is an int
        data = b"yes" if value else b"no"
    elif isinstance(value, int):
        data = str(value).encode()
    elif isinstance(value, str):
        data = value.encode("utf-8", errors="surrogateescape")
    elif isinstance(value, bytearray | memoryview):
        data = bytes(value)
    else:
        raise ViciLimitError(
            f"vici message: {path or '<root>'} has unsupported type {type(value).__name__}"
        )
    if len(data) > MAX_VALUE:
        raise ViciLimitError(
            f"vici message: value of {path} is {len(data)} bytes, more than VICI's "
            f"{MAX_VALUE}-byte limit"
        )
    return data


def _check_name(name: Any, path: str) -> str:
    if not isinstance(name, str):
        raise ViciLimitError(f"vici message: key {name!r} in {path or '<root>'} is not a str")
    size = len(name.encode("utf-8", errors="surrogateescape"))
    if size > MAX_NAME:
        raise ViciLimitError(
            f"vici message: name {name[:40]!r}... in {path or '<root>'} is {size} bytes, "
            f"more than VICI's {MAX_NAME}-byte limit"
        )
    return name


def normalize_message(message: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """Validate a request dict and turn every value into bytes (lists of bytes, dicts).

    Raises ViciLimitError naming the path (``conns.home.local-1.certs[0]``) of the first
    item charon would refuse.
    """
    out: dict[str, Any] = {}
    for key, value in message.items():
        _check_name(key, path)
        where = f"{path}.{key}" if path else key
        if isinstance(value, Mapping):
            out[key] = normalize_message(value, where)
        elif isinstance(value, list | tuple | set | frozenset):
            out[key] = [_encode_scalar(v, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            out[key] = _encode_scalar(value, where)
    return out


def encode_request(command: str, message: Mapping[str, Any] | None = None) -> bytes:
    """A complete CMD_REQUEST packet (without the 4-byte length), limits checked."""
    _check_name(command, "<command>")
    body = Message.serialize(normalize_message(message)) if message else None
    packet: bytes = Packet.request(command, body)
    if len(packet) > MAX_MESSAGE:
        raise ViciLimitError(
            f"vici {command}: message is {len(packet)} bytes, more than VICI's "
            f"{MAX_MESSAGE}-byte limit (split it: one item per command)"
        )
    return packet


def decode_message(stream: FiniteStream, decode: bool, uri: str) -> dict[str, Any]:
    """Deserialize a message body into plain dicts; malformed input is a protocol error."""
    return decode_body(stream.getvalue(), stream.tell(), decode, uri)


#: message element types (vici.protocol.Message's markers)
_SECTION_START, _SECTION_END, _KEY_VALUE, _LIST_START, _LIST_ITEM, _LIST_END = range(1, 7)
#: decoded key names by their bytes; bounded, because some names are per SA ("net-42")
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 4096


def _name(raw: bytes) -> str:
    name = _NAMES.get(raw)
    if name is None:
        name = raw.decode("utf-8")
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[raw] = name
    return name


def decode_body(data: bytes, pos: int, decode: bool, uri: str) -> dict[str, Any]:
    """A message body from `data[pos:]` as plain dicts, lists and str (bytes with
    decode=False); malformed input raises ViciConnectionError.

    Written for speed (a 100,000-SA `list-sas` is 100,000 of these): one pass over the
    bytes with indexing and slicing, where `vici.protocol.Message.deserialize` reads
    through a BytesIO with a `struct.unpack` per field and builds OrderedDicts, and
    values decoded in the same pass. 2.3x faster on a recorded list-sa event."""
    section: dict[str, Any] = {}
    stack: list[dict[str, Any]] = []
    end = len(data)
    try:
        while pos < end:
            kind = data[pos]
            if kind == _KEY_VALUE:
                n = data[pos + 1]
                key = _name(data[pos + 2:pos + 2 + n])
                pos += 2 + n
                size = (data[pos] << 8) | data[pos + 1]
                value = data[pos + 2:pos + 2 + size]
                pos += 2 + size
                section[key] = value.decode("utf-8", "surrogateescape") if decode else value
            elif kind == _SECTION_START:
                n = data[pos + 1]
                key = _name(data[pos + 2:pos + 2 + n])
                pos += 2 + n
                new: dict[str, Any] = {}
                section[key] = new
                stack.append(section)
                section = new
            elif kind == _SECTION_END:
                pos += 1
                section = stack.pop()
            elif kind == _LIST_START:
                n = data[pos + 1]
                key = _name(data[pos + 2:pos + 2 + n])
                pos += 2 + n
                items: list[Any] = []
                while data[pos] == _LIST_ITEM:
                    size = (data[pos + 1] << 8) | data[pos + 2]
                    value = data[pos + 3:pos + 3 + size]
                    pos += 3 + size
                    items.append(value.decode("utf-8", "surrogateescape") if decode else value)
                if data[pos] != _LIST_END:
                    raise ValueError(f"expected the end of list {key!r} at byte {pos}")
                pos += 1
                section[key] = items
            else:
                raise ValueError(f"unknown element type {kind} at byte {pos}")
        if pos != end:
            raise ValueError("a value runs past the end of the message")
        if stack:
            raise ValueError("a section is not closed")
    except (IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ViciConnectionError(
            f"vici {uri}: malformed message from charon: {str(exc) or type(exc).__name__}"
        ) from exc
    return section


#: turns a batch of decoded events into what the caller keeps (runs on the decoder thread)
BatchParser = Callable[[list[dict[str, Any]]], Iterable[Any]]
#: the same from the undecoded events: (packet, offset of the message body) each
RawBatchParser = Callable[[list[tuple[bytes, int]]], Iterable[Any]]


def _decode_events(packets: list[tuple[bytes, int]], decode: bool, uri: str,
                   parse: BatchParser | None = None,
                   parse_raw: RawBatchParser | None = None) -> list[Any]:
    if parse_raw is not None:
        return list(parse_raw(packets))
    events = [decode_body(raw, offset, decode, uri) for raw, offset in packets]
    return events if parse is None else list(parse(events))


_decoder: concurrent.futures.ThreadPoolExecutor | None = None


def _decoder_thread() -> concurrent.futures.ThreadPoolExecutor:
    """One thread for decoding large streamed replies off the event loop."""
    global _decoder
    if _decoder is None:
        _decoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vici-decode")
    return _decoder


# --- transport ------------------------------------------------------------------------


def parse_uri(uri: str) -> tuple[str, str, int]:
    """("unix", path, 0) or ("tcp", host, port) from a swanctl-style URI or a plain path."""
    if uri.startswith("unix://"):
        path = uri[len("unix://"):]
        if not path:
            raise ViciConnectionError(f"vici {uri}: no socket path in URI")
        return ("unix", path, 0)
    if uri.startswith("tcp://"):
        rest = uri[len("tcp://"):]
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            raise ViciConnectionError(f"vici {uri}: expected tcp://host:port")
        return ("tcp", host.strip("[]"), int(port))
    if "://" in uri:
        raise ViciConnectionError(f"vici {uri}: unsupported URI scheme (unix:// or tcp://)")
    return ("unix", uri, 0)


#: how much one read takes from the socket's buffer (many packets of a streamed reply)
_READ_CHUNK = 256 * 1024


class _Connection:
    """One framed VICI stream. Not safe for concurrent use: callers serialise.

    Reads ahead in chunks and cuts packets out of them: a 100,000-SA `list-sas` is
    100,000 packets, and two `readexactly` awaits plus a timer each cost the loop ~0.5 s
    of CPU at that size (measured, bench/README.md)."""

    def __init__(self, uri: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.uri = uri
        self._reader = reader
        self._writer = writer
        self.closed = False
        #: bytes read from the socket and not yet handed out: `_data[_pos:]`
        self._data = b""
        self._pos = 0

    @classmethod
    async def open(cls, uri: str, timeout: float) -> _Connection:
        kind, where, port = parse_uri(uri)
        try:
            async with asyncio.timeout(timeout):
                if kind == "unix":
                    reader, writer = await asyncio.open_unix_connection(
                        where, limit=MAX_MESSAGE * 2 + 16
                    )
                else:
                    reader, writer = await asyncio.open_connection(
                        where, port, limit=MAX_MESSAGE * 2 + 16
                    )
        except TimeoutError:
            raise ViciConnectionError(f"vici {uri}: connect timed out after {timeout}s") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ViciConnectionError(f"vici {uri}: cannot connect: {reason}") from exc
        return cls(uri, reader, writer)

    async def send(self, packet: bytes) -> None:
        if self.closed:
            raise ViciConnectionError(f"vici {self.uri}: connection is closed")
        try:
            self._writer.write(_HEADER.pack(len(packet)) + packet)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            await self.close()
            raise ViciConnectionError(f"vici {self.uri}: send failed: {exc}") from exc

    async def receive(self, timeout: float | None, body_timeout: float = 30.0) -> bytes:
        """One packet. `timeout` bounds the wait for its first byte (None: forever)."""
        if self.closed:
            raise ViciConnectionError(f"vici {self.uri}: connection is closed")
        try:
            if len(self._data) - self._pos < _HEADER.size:
                async with asyncio.timeout(timeout):
                    await self._fill(_HEADER.size)
            (length,) = _HEADER.unpack_from(self._data, self._pos)
            if length > MAX_MESSAGE * 2:
                raise ViciConnectionError(
                    f"vici {self.uri}: implausible packet length {length}: stream desynced"
                )
            start = self._pos + _HEADER.size
            if len(self._data) < start + length:
                async with asyncio.timeout(body_timeout):
                    await self._fill(_HEADER.size + length)
                start = self._pos + _HEADER.size
            self._pos = start + length
            return self._data[start:self._pos]
        except TimeoutError:
            await self.close()
            raise ViciConnectionError(
                f"vici {self.uri}: no reply within {timeout}s (charon drops replies larger "
                f"than 512 KiB; the connection was closed)"
            ) from None
        except asyncio.IncompleteReadError as exc:
            await self.close()
            raise ViciConnectionError(f"vici {self.uri}: charon closed the connection") from exc
        except OSError as exc:
            await self.close()
            raise ViciConnectionError(f"vici {self.uri}: receive failed: {exc}") from exc
        except ViciConnectionError:
            await self.close()
            raise

    async def _fill(self, size: int) -> None:
        """Read until `size` bytes are held (IncompleteReadError at EOF before that)."""
        while len(self._data) - self._pos < size:
            chunk = await self._reader.read(_READ_CHUNK)
            if not chunk:
                raise asyncio.IncompleteReadError(self._data[self._pos:], size)
            self._data = self._data[self._pos:] + chunk
            self._pos = 0

    @property
    def dead(self) -> bool:
        """Closed by us, or charon's EOF already seen: reconnect before sending."""
        return self.closed or (self._reader.at_eof() and self._pos >= len(self._data))

    def abort(self) -> None:
        """Close without waiting (safe inside a cancellation handler)."""
        if not self.closed:
            self.closed = True
            self._writer.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.abort()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()


def _parse(raw: bytes, uri: str) -> Any:
    try:
        return Packet.parse(raw)
    except Exception as exc:
        raise ViciConnectionError(f"vici {uri}: malformed packet from charon: {exc}") from exc


# --- commands -------------------------------------------------------------------------


async def _pipeline(conn: _Connection, uri: str,
                    requests: list[tuple[str, Mapping[str, Any]]]
                    ) -> list[dict[str, Any] | Exception]:
    """Send the requests back to back on `conn` while reading the replies.

    VICI has no request ids, but charon answers one connection's requests in order, so
    writing them back to back removes a round trip per request (1,000 load-conn: 0.6 s
    instead of 1.3 s). Each request is encoded just before it is written, so charon starts
    on the first while Python encodes the rest. A request over VICI's limits is not sent:
    its slot holds the ViciLimitError. Connection problems raise ViciConnectionError.
    """
    results: list[dict[str, Any] | Exception] = [
        ViciConnectionError("not sent")] * len(requests)
    sent: asyncio.Queue[int | None] = asyncio.Queue()

    async def read_replies() -> None:
        while (index := await sent.get()) is not None:
            parsed = _parse(await conn.receive(None), uri)
            if parsed.response_type == Packet.CMD_RESPONSE:
                results[index] = decode_message(parsed.payload, True, uri)
            elif parsed.response_type == Packet.CMD_UNKNOWN:
                results[index] = {"success": "no", "errmsg": "unknown command"}
            else:
                raise ViciConnectionError(
                    f"vici {uri}: unexpected packet type {parsed.response_type} in reply "
                    f"to {requests[index][0]}")

    reading = asyncio.create_task(read_replies())
    try:
        for index, (command, message) in enumerate(requests):
            try:
                packet = encode_request(command, message)
            except ViciLimitError as exc:
                results[index] = exc
                continue
            await conn.send(packet)
            sent.put_nowait(index)
        sent.put_nowait(None)
        await reading
        return results
    finally:
        reading.cancel()


class _EventBatches:
    """The events of one streamed command, decoded off the event loop.

    The loop only frames packets; every `BATCH` events go to the decoder thread while
    the loop goes on reading (charon keeps producing meanwhile). A reply with fewer
    events than a batch is decoded in the loop: a thread hop would cost more."""

    BATCH = 512

    def __init__(self, event: str, decode: bool, uri: str,
                 parse: BatchParser | None = None,
                 parse_raw: RawBatchParser | None = None) -> None:
        self.event = event
        self.wanted = event.encode()
        self.decode = decode
        self.uri = uri
        self.parse = parse
        self.parse_raw = parse_raw
        self.count = 0
        #: bytes of the wanted events taken so far (the stream cap counts them)
        self.held = 0
        self._batch: list[tuple[bytes, int]] = []
        self._futures: list[asyncio.Future[list[Any]]] = []

    def add(self, raw: bytes) -> int:
        """Take one EVENT packet; returns how many wanted events were taken so far."""
        offset = 2 + raw[1]
        if raw[2:offset] != self.wanted:
            return self.count  # another event (e.g. a late one of an earlier command)
        self._batch.append((raw, offset))
        self.count += 1
        self.held += len(raw)
        if len(self._batch) >= self.BATCH:
            self._submit()
        return self.count

    def _submit(self) -> None:
        batch, self._batch = self._batch, []
        self._futures.append(asyncio.get_running_loop().run_in_executor(
            _decoder_thread(), _decode_events, batch, self.decode, self.uri, self.parse,
            self.parse_raw))

    async def result(self) -> list[Any]:
        if not self._futures:
            return _decode_events(self._batch, self.decode, self.uri, self.parse,
                                  self.parse_raw)
        if self._batch:
            self._submit()
        events: list[Any] = []
        for future in self._futures:
            events.extend(await future)
        return events


class ViciSession:
    """Commands over one connection, one at a time.

    Poisoning policy: a command cancelled or timed out mid-flight closes the connection
    (its late reply would otherwise answer the next command). A closed connection, for
    that or because charon went away, is reopened by the next `request()` / `streamed()`;
    if that fails, the call raises `ViciConnectionError`. A connection charon closed while
    idle is noticed (EOF) and replaced *before* sending, so the first command after a
    restart just works; a command in flight when charon dies raises (it may or may not
    have been applied: the caller decides whether to retry). `generation` increments on
    each (re)connection: a caller that sees it change must assume charon's state was lost.
    """

    def __init__(self, uri: str, connect_timeout: float = 5.0) -> None:
        self.uri = uri
        self.connect_timeout = connect_timeout
        self.generation = 0
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, uri: str, timeout: float = 5.0) -> ViciSession:
        """Open a session now; raises ViciConnectionError fast when the socket is absent."""
        session = cls(uri, timeout)
        await session._ensure_connected()
        return session

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.dead

    async def _ensure_connected(self) -> _Connection:
        # an idle connection charon closed (restart) is replaced before anything is
        # sent on it: nothing was applied, so this is safe for every command
        if self._conn is None or self._conn.dead:
            self._conn = await _Connection.open(self.uri, self.connect_timeout)
            self.generation += 1
        return self._conn

    async def _send_first(self, packet: bytes) -> _Connection:
        """Send a command's first packet; on a connection that turns out dead while
        sending (charon restarted and the loop had not yet seen the EOF), once more on a
        fresh one: a write that failed reached no live charon, so nothing was applied."""
        conn = await self._ensure_connected()
        try:
            await conn.send(packet)
        except ViciConnectionError:
            self._conn = None
            conn = await self._ensure_connected()
            await conn.send(packet)
        return conn

    async def _poison(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.abort()

    async def request(
        self,
        command: str,
        message: Mapping[str, Any] | None = None,
        *,
        timeout: float = 30.0,
        check: bool = True,
        decode: bool = True,
    ) -> dict[str, Any]:
        """Send `command` and return charon's reply as a dict.

        check=True raises ViciCommandError when the reply says ``success = no``.
        decode=False keeps values as bytes (certificate blobs).
        """
        packet = encode_request(command, message)
        async with self._lock:
            try:
                async with asyncio.timeout(timeout):
                    conn = await self._send_first(packet)
                    reply = await self._read_reply(conn, command, None, decode)
            except TimeoutError:
                await self._poison()
                raise ViciConnectionError(
                    f"vici {self.uri}: {command} got no reply within {timeout}s "
                    f"(connection closed)"
                ) from None
            except ViciCommandError:
                raise  # CMD_UNKNOWN: the stream is still in step
            except BaseException:
                await self._poison()
                raise
        return self._checked(command, reply, check)

    async def pipelined(self, requests: list[tuple[str, Mapping[str, Any]]], *,
                        timeout: float) -> list[dict[str, Any] | Exception]:
        """Many commands written back to back on this session's connection, the replies
        read meanwhile (see `_pipeline`); one result per request, in order: the reply,
        or the ViciLimitError of a request that was not sent. Any other failure poisons
        the connection and raises ViciConnectionError. No extra connection is opened:
        swand's daemon holds a fixed set of them (swand.runtime.charon)."""
        async with self._lock:
            conn = await self._ensure_connected()
            try:
                async with asyncio.timeout(timeout):
                    return await _pipeline(conn, self.uri, requests)
            except TimeoutError:
                await self._poison()
                raise ViciConnectionError(
                    f"vici {self.uri}: {len(requests)} pipelined requests got no complete "
                    f"answer within {timeout:g} s (connection closed)") from None
            except BaseException:
                await self._poison()
                raise

    async def streamed(
        self,
        command: str,
        event: str,
        message: Mapping[str, Any] | None = None,
        *,
        timeout: float = 60.0,
        decode: bool = True,
        check: bool = True,
        parse: BatchParser | None = None,
        parse_raw: RawBatchParser | None = None,
    ) -> tuple[list[Any], dict[str, Any]]:
        """Register for `event`, send `command`, collect its events until the reply.

        Returns (events, reply), e.g. ``streamed("list-sas", "list-sa")``. The event is
        unregistered afterwards so the connection carries nothing unsolicited. A reply
        that grows past `MAX_STREAMED_EVENTS` events or `MAX_STREAMED_BYTES` raises
        ViciReplyTooLarge (and closes the connection) instead of holding it all.

        Large replies are decoded on a worker thread while they arrive. `parse` (pure,
        thread-safe) turns each batch of decoded events into what is kept, on that
        thread: 100,000 decoded list-sa dicts never exist at once, and the loop never
        runs the parsing (nor the garbage collections a million short-lived dicts cause).
        `parse_raw` (instead of `parse`) gets each batch undecoded, as (packet, offset of
        the message body) pairs, for a caller with a faster way from the bytes.
        """
        _check_name(event, "<event>")
        packet = encode_request(command, message)
        batches = _EventBatches(event, decode, self.uri, parse, parse_raw)
        async with self._lock:
            conn = await self._ensure_connected()
            try:
                async with asyncio.timeout(timeout):
                    await self._event_op(conn, Packet.register_event(event), event)
                    await conn.send(packet)
                    reply = await self._read_reply(conn, command, batches, decode)
                    await self._event_op(conn, Packet.unregister_event(event), event)
                    events = await batches.result()
            except TimeoutError:
                await self._poison()
                raise ViciConnectionError(
                    f"vici {self.uri}: {command} got no reply within {timeout}s "
                    f"(connection closed)"
                ) from None
            except BaseException:
                # includes CMD_UNKNOWN / EVENT_UNKNOWN: the event may still be registered
                await self._poison()
                raise
        return events, self._checked(command, reply, check)

    async def _event_op(self, conn: _Connection, packet: bytes, event: str) -> None:
        # like _read_reply: a failure raises, and the caller poisons the connection
        await conn.send(packet)
        while True:
            parsed = _parse(await conn.receive(None), self.uri)
            if parsed.response_type == Packet.EVENT:
                continue  # a late streamed event; nothing else is registered here
            if parsed.response_type == Packet.EVENT_CONFIRM:
                return
            if parsed.response_type == Packet.EVENT_UNKNOWN:
                raise ViciCommandError(f"register {event}", "unknown event")
            raise ViciConnectionError(
                f"vici {self.uri}: unexpected packet type {parsed.response_type} "
                f"registering {event}"
            )

    async def _read_reply(
        self, conn: _Connection, command: str, batches: _EventBatches | None, decode: bool,
    ) -> dict[str, Any]:
        while True:
            raw = await conn.receive(None)
            kind = raw[0] if raw else -1
            if kind == Packet.CMD_RESPONSE:
                return decode_body(raw, 1, decode, self.uri)
            if kind == Packet.CMD_UNKNOWN:
                raise ViciCommandError(command, "unknown command")
            if kind == Packet.EVENT and len(raw) >= 2:
                if batches is None:
                    continue
                taken = batches.add(raw)
                if taken > MAX_STREAMED_EVENTS or batches.held > MAX_STREAMED_BYTES:
                    raise ViciReplyTooLarge(
                        f"vici {self.uri}: {command} streamed more than "
                        f"{MAX_STREAMED_EVENTS:,} {batches.event} events or "
                        f"{MAX_STREAMED_BYTES // (1024 * 1024)} MiB without finishing: "
                        f"request failed, connection closed")
                if taken % 256 == 0:
                    # buffered events are read without suspending: let the loop run
                    # (a 100,000-SA list-sas would otherwise block it for seconds)
                    await asyncio.sleep(0)
                continue
            raise ViciConnectionError(
                f"vici {self.uri}: unexpected packet type {kind} in reply to {command}"
            )

    @staticmethod
    def _checked(command: str, reply: dict[str, Any], check: bool) -> dict[str, Any]:
        if check:
            success = reply.get("success")
            if isinstance(success, bytes):
                success = success.decode(errors="replace")
            if success == "no":
                errmsg = reply.get("errmsg", "failed")
                if isinstance(errmsg, bytes):
                    errmsg = errmsg.decode(errors="replace")
                raise ViciCommandError(command, str(errmsg), reply)
        return reply

    async def close(self) -> None:
        """Close now, without waiting for a command in flight (it fails with
        ViciConnectionError): shutdown must not wait out a 30 s timeout."""
        await self._poison()

    async def __aenter__(self) -> ViciSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- events ---------------------------------------------------------------------------


class ViciEventStream:
    """A dedicated connection that receives events.

    Call `register()` before consuming; `register()` and `next_event()` must not run
    concurrently (events that arrive while registering are kept, not lost).
    `next_event()` waits without a timeout (events are sporadic) and raises
    ViciConnectionError when charon closes the socket. There is no automatic reconnect:
    a watcher reconnects, re-registers and resynchronises (see swand.runtime.events).
    """

    def __init__(self, conn: _Connection, decode: bool = True) -> None:
        self.uri = conn.uri
        self._conn = conn
        self._decode = decode
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self.registered: set[str] = set()

    @classmethod
    async def connect(cls, uri: str, timeout: float = 5.0) -> ViciEventStream:
        return cls(await _Connection.open(uri, timeout))

    async def register(self, events: Iterable[str], *, timeout: float = 10.0) -> set[str]:
        """Register each event; return those charon accepted (EVENT_UNKNOWN ones omitted)."""
        accepted: set[str] = set()
        for event in events:
            _check_name(event, "<event>")
            await self._conn.send(Packet.register_event(event))
            while True:
                parsed = _parse(await self._conn.receive(timeout), self.uri)
                if parsed.response_type == Packet.EVENT:
                    self._pending.append(self._event(parsed))
                    continue
                if parsed.response_type == Packet.EVENT_CONFIRM:
                    accepted.add(event)
                elif parsed.response_type != Packet.EVENT_UNKNOWN:
                    await self._conn.close()
                    raise ViciConnectionError(
                        f"vici {self.uri}: unexpected packet type {parsed.response_type} "
                        f"registering {event}"
                    )
                break
        self.registered |= accepted
        return accepted

    def _event(self, parsed: Any) -> tuple[str, dict[str, Any]]:
        name = parsed.event_type.decode("utf-8", errors="replace")
        return name, decode_message(parsed.payload, self._decode, self.uri)

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        """The next (event name, payload); raises ViciConnectionError when closed."""
        if self._pending:
            return self._pending.popleft()
        while True:
            parsed = _parse(await self._conn.receive(None), self.uri)
            if parsed.response_type == Packet.EVENT:
                return self._event(parsed)
            # anything else on an event-only connection is ignored (nothing was asked)

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> ViciEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
