"""VICI encoding, limits and framing, against an in-process fake charon (no root)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import tempfile
from pathlib import Path

import pytest
from vici.protocol import FiniteStream, Message, Packet

from swand.adapters.vici import (
    MAX_MESSAGE,
    ViciCommandError,
    ViciConnectionError,
    ViciEventStream,
    ViciLimitError,
    ViciSession,
    encode_request,
    normalize_message,
    parse_uri,
)


def test_values_encode_as_vici_text() -> None:
    msg = normalize_message(
        {"a": "x", "b": b"\x00\xff", "c": 42, "d": True, "e": False, "f": ["1", 2, b"3"],
         "g": {"h": {"i": "j"}}}
    )
    assert msg == {"a": b"x", "b": b"\x00\xff", "c": b"42", "d": b"yes", "e": b"no",
                   "f": [b"1", b"2", b"3"], "g": {"h": {"i": b"j"}}}


def test_request_round_trips_through_the_vici_codec() -> None:
    packet = encode_request("load-conn", {"home": {"version": 2, "local_addrs": ["%any"]}})
    assert packet[0] == Packet.CMD_REQUEST
    name_len = packet[1]
    assert packet[2:2 + name_len] == b"load-conn"
    body = Message.deserialize(FiniteStream(packet[2 + name_len:]))
    assert body == {"home": {"version": b"2", "local_addrs": [b"%any"]}}


def test_oversized_value_names_its_path() -> None:
    with pytest.raises(ViciLimitError, match=r"conns\.big\.certs\[1\].*65535"):
        normalize_message({"conns": {"big": {"certs": [b"x", b"y" * 70000]}}})


def test_long_key_is_refused() -> None:
    with pytest.raises(ViciLimitError, match="255-byte"):
        normalize_message({"a": {"k" * 256: "v"}})


def test_oversized_message_is_refused_before_sending() -> None:
    big = {f"k{i}": b"v" * 60000 for i in range(10)}  # every value fits, the total does not
    with pytest.raises(ViciLimitError, match=str(MAX_MESSAGE)):
        encode_request("load-cert", big)


def test_unsupported_types_are_named() -> None:
    with pytest.raises(ViciLimitError, match=r"x\.y has unsupported type float"):
        normalize_message({"x": {"y": 1.5}})
    with pytest.raises(ViciLimitError, match="unsupported type NoneType"):
        normalize_message({"x": None})


def test_uri_forms() -> None:
    assert parse_uri("unix:///run/charon.vici") == ("unix", "/run/charon.vici", 0)
    assert parse_uri("/run/charon.vici") == ("unix", "/run/charon.vici", 0)
    assert parse_uri("tcp://127.0.0.1:4502") == ("tcp", "127.0.0.1", 4502)
    with pytest.raises(ViciConnectionError):
        parse_uri("http://x")


# --- a fake charon over a real unix socket ---------------------------------------------


def frame(packet: bytes) -> bytes:
    return struct.pack("!I", len(packet)) + packet


def response(msg: dict) -> bytes:
    return frame(bytes([Packet.CMD_RESPONSE]) + Message.serialize(msg))


def event(name: str, msg: dict) -> bytes:
    return frame(bytes([Packet.EVENT, len(name)]) + name.encode() + Message.serialize(msg))


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    return await reader.readexactly(length)


def named(packet: bytes) -> tuple[int, str]:
    return packet[0], packet[2:2 + packet[1]].decode()


def commands_handler(on_command, on_register=None):
    """A fake charon's connection handler: event (un)registrations are confirmed (then
    `on_register(name, writer)`, if given, may write more), every command goes to
    `on_command(name, writer)`, which writes the answer; the loop ends when the client
    closes the connection."""

    async def handler(reader, writer):
        while True:
            try:
                kind, name = named(await read_packet(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
                writer.write(frame(bytes([Packet.EVENT_CONFIRM])))
                if on_register is not None and kind == Packet.EVENT_REGISTER:
                    await on_register(name, writer)
            else:
                await on_command(name, writer)
            await writer.drain()

    return handler


class FakeCharon:
    """Answers with a scripted handler per connection; records what it received."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.dir = tempfile.TemporaryDirectory()
        self.path = str(Path(self.dir.name) / "charon.vici")
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FakeCharon:
        self.server = await asyncio.start_unix_server(self.handler, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        self.dir.cleanup()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_request_decodes_and_checks() -> None:
    async def handler(reader, writer):
        while True:
            try:
                packet = await read_packet(reader)
            except asyncio.IncompleteReadError:
                return
            _, name = named(packet)
            if name == "version":
                writer.write(response({"daemon": "charon", "version": "5.9.8"}))
            elif name == "load-conn":
                writer.write(response({"success": "no", "errmsg": "bad proposal"}))
            else:
                writer.write(frame(bytes([Packet.CMD_UNKNOWN])))
            await writer.drain()

    async def main():
        async with FakeCharon(handler) as fake:
            s = await ViciSession.connect(f"unix://{fake.path}")
            assert await s.request("version") == {"daemon": "charon", "version": "5.9.8"}
            assert (await s.request("version", decode=False))["version"] == b"5.9.8"
            with pytest.raises(ViciCommandError) as err:
                await s.request("load-conn", {"x": {}})
            assert err.value.command == "load-conn" and err.value.errmsg == "bad proposal"
            reply = await s.request("load-conn", {"x": {}}, check=False)
            assert reply["success"] == "no"
            with pytest.raises(ViciCommandError, match="unknown command"):
                await s.request("nope")
            assert await s.request("version")  # still in step
            assert s.generation == 1
            await s.close()

    run(main())


def test_timeout_poisons_then_reconnects() -> None:
    connections = 0
    slow_received, release_slow = asyncio.Event(), asyncio.Event()

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        mine = connections
        while True:
            try:
                packet = await read_packet(reader)
            except asyncio.IncompleteReadError:
                return
            _, name = named(packet)
            if name == "slow":
                slow_received.set()
                await release_slow.wait()  # the reply arrives after the client gave up
            writer.write(response({"answer": name, "conn": str(mine)}))
            try:
                await writer.drain()
            except ConnectionError:
                return

    async def main():
        async with FakeCharon(handler) as fake:
            s = await ViciSession.connect(fake.path)
            with pytest.raises(ViciConnectionError, match="no reply within"):
                await s.request("slow", timeout=0.01)
            assert not s.connected
            release_slow.set()
            # the late "slow" reply must not answer this one: a fresh connection does
            assert await s.request("fast") == {"answer": "fast", "conn": "2"}
            assert s.generation == 2
            slow_received.clear()
            release_slow.clear()
            task = asyncio.create_task(s.request("slow"))
            await slow_received.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await s.request("fast") == {"answer": "fast", "conn": "3"}
            await s.close()

    run(main())


def test_streamed_collects_events_until_the_reply() -> None:
    async def list_sas(_name, writer):
        for i in range(3):
            writer.write(event("list-sa", {f"sa{i}": {"uniqueid": str(i)}}))
        writer.write(event("other", {"x": "y"}))
        writer.write(response({}))

    handler = commands_handler(list_sas)

    async def main():
        async with FakeCharon(handler) as fake:
            s = await ViciSession.connect(fake.path)
            events, reply = await s.streamed("list-sas", "list-sa", {"noblock": True})
            assert [e[f"sa{i}"]["uniqueid"] for i, e in enumerate(events)] == ["0", "1", "2"]
            assert reply == {}
            await s.close()

    run(main())


def test_event_stream_probes_registration_and_reports_close() -> None:
    async def handler(reader, writer):
        for _ in range(3):
            kind, name = named(await read_packet(reader))
            assert kind == Packet.EVENT_REGISTER
            if name == "alert":
                writer.write(frame(bytes([Packet.EVENT_UNKNOWN])))
            else:
                # an event sneaks in before the confirmation: it must not be lost
                writer.write(event("ike-updown", {"up": "yes"}))
                writer.write(frame(bytes([Packet.EVENT_CONFIRM])))
            await writer.drain()
        writer.write(event("log", {"msg": "hello"}))
        await writer.drain()
        writer.close()

    async def main():
        async with FakeCharon(handler) as fake:
            stream = await ViciEventStream.connect(fake.path)
            got = await stream.register(["ike-updown", "alert", "log"])
            assert got == {"ike-updown", "log"}
            assert await stream.next_event() == ("ike-updown", {"up": "yes"})
            assert await stream.next_event() == ("ike-updown", {"up": "yes"})
            assert await stream.next_event() == ("log", {"msg": "hello"})
            with pytest.raises(ViciConnectionError, match="closed"):
                await stream.next_event()
            await stream.close()

    run(main())


def test_missing_socket_fails_fast() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ViciConnectionError, match=r"/nonexistent/charon\.vici"):
            await ViciSession.connect("unix:///nonexistent/charon.vici")
        assert loop.time() - start < 1.0

    run(main())


def test_close_does_not_wait_for_a_command_in_flight() -> None:
    received = asyncio.Event()

    async def handler(reader, writer):
        await read_packet(reader)
        received.set()
        await asyncio.Event().wait()  # never answers

    async def main():
        async with FakeCharon(handler) as fake:
            s = await ViciSession.connect(fake.path)
            task = asyncio.create_task(s.request("slow", timeout=30))
            await received.wait()
            loop = asyncio.get_running_loop()
            start = loop.time()
            await s.close()
            with pytest.raises(ViciConnectionError):
                await task
            assert loop.time() - start < 1.0

    run(main())


def test_an_unexpected_packet_closes_the_connection_and_the_next_request_reconnects(
        ) -> None:
    """A reply of the wrong type means the stream is out of step: the connection is
    dropped (one place does that: the request's failure path) and replaced."""
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        while True:
            try:
                packet = await read_packet(reader)
            except asyncio.IncompleteReadError:
                return
            _, name = named(packet)
            if name == "odd":  # an event confirmation where a reply belongs
                writer.write(frame(bytes([Packet.EVENT_CONFIRM])))
            else:
                writer.write(response({"answer": name, "conn": str(connections)}))
            await writer.drain()

    async def main():
        async with FakeCharon(handler) as fake:
            s = await ViciSession.connect(fake.path)
            with pytest.raises(ViciConnectionError, match="unexpected packet type"):
                await s.request("odd")
            assert not s.connected
            assert await s.request("fast") == {"answer": "fast", "conn": "2"}
            assert s.generation == 2
            await s.close()

    run(main())


# --- a peer that streams without end (issue 12, item 10) ---------------------------------

#: a list-sa event of charon's size (~900 bytes on the wire, as recorded from 5.9.8)
LIST_SA_EVENT = event("list-sa", {"rw": {
    "uniqueid": "4", "state": "ESTABLISHED", "remote-id": "c1@bench.test" * 4,
    "remote-host": "192.0.2.11", "remote-vips": ["10.9.0.3"], "spi": "0" * 600,
}})


def endless_list_sas(limit: int, event_packet: bytes = LIST_SA_EVENT):
    """A peer that answers list-sas with events and never with the reply (up to `limit`
    events, so a client without a cap fails by its timeout, not by eating the machine)."""
    served: list[int] = []

    async def command(name, writer):
        if name != "list-sas":
            writer.write(response({"answer": name}))
            return
        sent = 0
        try:
            while sent < limit:
                writer.write(event_packet)
                sent += 1
                if sent % 64 == 0:
                    await writer.drain()
        finally:
            served.append(sent)

    serve = commands_handler(command)

    async def handler(reader, writer):
        with contextlib.suppress(ConnectionError):
            await serve(reader, writer)

    return handler, served


@pytest.mark.parametrize("cap", ["events", "bytes"])
def test_a_streamed_reply_is_capped(cap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed before: `streamed()` kept every event until its timeout (a fake peer grew
    it to 3 GB in 12 s); now the request fails once the cap is passed, the connection is
    closed, and the session works again on a new one."""
    import tracemalloc

    from swand.adapters import vici

    if cap == "events":
        monkeypatch.setattr(vici, "MAX_STREAMED_EVENTS", 2_000, raising=False)
    else:
        # about 1,350 events
        monkeypatch.setattr(vici, "MAX_STREAMED_BYTES", 1 << 20, raising=False)
    handler, served = endless_list_sas(limit=20_000)

    async def main() -> None:
        async with FakeCharon(handler) as fake:
            s = await ViciSession.connect(fake.path)
            first = s.generation
            tracemalloc.start()
            try:
                with pytest.raises(ViciConnectionError, match="list-sas streamed more") as exc:
                    await s.streamed("list-sas", "list-sa", timeout=10.0)
                assert type(exc.value).__name__ == "ViciReplyTooLarge"
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < 32 * 1024 * 1024, peak
            assert await s.request("version") == {"answer": "version"}
            assert s.generation == first + 1  # the streaming connection was dropped
            await s.close()

    run(main())
    assert served and served[0] < 20_000  # it stopped reading long before the peer did


def test_the_default_caps_hold_a_100k_sa_list_sas() -> None:
    """The caps are well above what a 100,000-SA gateway's list-sas needs (measured with
    bench/synthetic_vici.py's recorded event: ~900 bytes per SA)."""
    from swand.adapters import vici

    assert len(LIST_SA_EVENT) < 1024
    assert vici.MAX_STREAMED_EVENTS >= 3 * 100_000
    assert vici.MAX_STREAMED_BYTES >= 3 * 85 * 1024 * 1024  # 100k SAs: 85 MiB


# --- the fast decoder and decoding off the loop ------------------------------------------


SAMPLE = {
    "rw": {"uniqueid": "4", "state": "ESTABLISHED", "remote-vips": ["10.9.0.3", "fd00::3"],
           "empty-list": [], "empty": {}, "blank": "",
           "child-sas": {"net-3": {"name": "net", "local-ts": ["10.10.0.0/16"],
                                   "bytes-in": "12", "odd": "\xe9t\xe9"}}},
    "up": "yes",
}


@pytest.mark.parametrize("decode", [True, False])
def test_decode_body_equals_the_vici_codec(decode: bool) -> None:
    from swand.adapters.vici import decode_body

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value.decode("utf-8", "surrogateescape") if decode else value

    body = Message.serialize(SAMPLE)
    expected = plain(Message.deserialize(FiniteStream(body)))
    assert decode_body(b"xx" + body, 2, decode, "u") == expected
    assert decode_body(body + b"", 0, True, "u") == SAMPLE


@pytest.mark.parametrize("cut", [1, 3, 10, -1, -5])
def test_decode_body_refuses_a_truncated_message(cut: int) -> None:
    from swand.adapters.vici import decode_body

    body = Message.serialize(SAMPLE)
    with pytest.raises(ViciConnectionError, match="malformed message from charon"):
        decode_body(body[:cut], 0, True, "u")


@pytest.mark.parametrize("body", [
    bytes([9]),                                   # unknown element type
    bytes([2]),                                   # end of a section never opened
    bytes([1, 1]) + b"a",                         # a section never closed
    bytes([4, 1]) + b"l" + bytes([5, 0, 1]) + b"x" + bytes([3]),  # list without its end
    bytes([3, 2]) + b"\xff\xfe" + bytes([0, 0]),  # a key that is not UTF-8
])
def test_decode_body_refuses_malformed_input(body: bytes) -> None:
    from swand.adapters.vici import decode_body

    with pytest.raises(ViciConnectionError, match="malformed message from charon"):
        decode_body(body, 0, True, "u")


def test_large_streamed_reply_is_decoded_in_order_off_the_loop() -> None:
    """More events than a batch: decoded by the decoder thread, in charon's order, and
    unwanted events interleaved are dropped."""
    from swand.adapters.vici import _EventBatches

    n = _EventBatches.BATCH * 2 + 7
    threads: set[str] = set()

    async def list_sas(_name, writer):
        for i in range(n):
            writer.write(event("list-sa", {f"sa{i}": {"uniqueid": str(i)}}))
            if i == 5:
                writer.write(event("list-conn", {"x": {}}))
        writer.write(response({}))

    handler = commands_handler(list_sas)

    import swand.adapters.vici as vici_adapter

    real = vici_adapter._decode_events

    def spy(*args):
        import threading

        threads.add(threading.current_thread().name)
        return real(*args)

    async def main():
        async with FakeCharon(handler) as fake:
            s = await ViciSession.connect(fake.path)
            events, _ = await s.streamed("list-sas", "list-sa")
            assert [e[f"sa{i}"]["uniqueid"] for i, e in enumerate(events)] == [
                str(i) for i in range(n)]
            await s.close()

    vici_adapter._decode_events = spy
    try:
        run(main())
    finally:
        vici_adapter._decode_events = real
    assert threads and all(t.startswith("vici-decode") for t in threads)


def test_an_sa_event_is_handled_while_a_slow_list_sas_is_in_progress() -> None:
    """charon streams a large list-sas slowly; an SA event on the event connection is
    handled (by a consumer in the same loop) before the list-sas completes."""

    async def main():
        handled = asyncio.Event()
        release = asyncio.Event()
        listing = asyncio.Event()

        async def registered(name, writer):
            if name == "child-updown":
                await writer.drain()
                await listing.wait()  # once the listing is under way
                writer.write(event("child-updown", {"up": "yes", "rw": {}}))

        async def list_sas(name, writer):
            if name != "list-sas":
                return
            for i in range(2000):
                writer.write(event("list-sa", {f"sa{i}": {"uniqueid": str(i)}}))
                if i == 1000:
                    await writer.drain()
                    listing.set()
                    await release.wait()  # charon busy: the rest comes later
            writer.write(response({}))

        handler = commands_handler(list_sas, registered)

        async with FakeCharon(handler) as fake:
            stream = await ViciEventStream.connect(fake.path)

            async def consume() -> None:
                name, payload = await stream.next_event()
                assert name == "child-updown" and payload["up"] == "yes"
                handled.set()

            session = await ViciSession.connect(fake.path)
            poll = asyncio.create_task(session.streamed("list-sas", "list-sa"))
            await stream.register(["child-updown"])
            consumer = asyncio.create_task(consume())
            await handled.wait()
            assert not poll.done()  # the event did not wait for the listing
            release.set()
            events, _ = await poll
            assert len(events) == 2000
            await consumer
            await stream.close()
            await session.close()

    run(main())
