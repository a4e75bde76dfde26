"""LogForwardActor: lives in the child, relays its framed output to the driver's client.

It serves the child's BOOTSTRAP_LOG_CHANNEL (the bootstrap's senders dial in), dials that
address itself to inject markers in-band, and dials the client. Barriers are strong: the
ack for version v waits for the self-dialed marker *and* for a Flush(v) from every live
sender, which the bootstrap posts only after draining that pipe. So an ack means every
byte the child wrote before the barrier began has been relayed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Callable
from typing import Any

from . import wire
from .channel import FrameConnection, dial, serve
from .guards import guard_accepted, guard_dialed
from .journal import Ev, Journal
from .mesh_key import MeshKey
from .private_dirs import private_dir

HEARTBEAT_S = 1.0
CONFIRM_RETRY_S = 0.002
"""How soon relayed batches still in the client connection's write buffer are looked at
again (to confirm them to their sender once they have left the process)."""
DEFAULT_BATCH_LINES = 100
CHANNEL_KINDS = (wire.FLUSH, wire.STOP)
"""What the bootstrap's senders and the self-dial may send besides HELLO and Log."""
CLIENT_KINDS = (wire.FORCE_SYNC, wire.SET_MODE)
"""What the client may send to a forwarder."""


class LogForwardActor:
    """One per child; all methods run on the child's forwarder loop."""

    def __init__(
        self,
        *,
        rank: int,
        hostname: str,
        proc_id: str,
        channel: str | None,
        client_addr: str | None,
        journal: Journal,
        on_stop: Callable[[], None],
        on_ack: Callable[[int], None],
        stream_to_client: bool = True,
        key: MeshKey | None = None,
    ) -> None:
        self.rank = rank
        self.hostname = hostname
        self.proc_id = proc_id
        self.channel = channel
        self.client_addr = client_addr
        self.journal = journal
        self.on_stop = on_stop
        self.on_ack = on_ack
        self.stream_to_client = stream_to_client
        self.key = key
        """The mesh secret (every peer of the channel must show it) and the batch size,
        from the bootstrap; None when the child was not started by one."""
        self.batch_lines = key.batch_lines if key is not None else DEFAULT_BATCH_LINES
        self.client: FrameConnection | None = None
        self.senders: dict[str, FrameConnection] = {}
        self.senders_ready = asyncio.Event()
        self.eof_streams: set[str] = set()
        self.tails_done = asyncio.Event()
        self._self_tx: FrameConnection | None = None
        self._self_rx: FrameConnection | None = None  # its accepted end
        self._pending: dict[int, set[object]] = {}
        self._heartbeat_due = False
        self._server: asyncio.AbstractServer | None = None
        self._tmpdir: str | None = None
        self._paused = False
        self._relayed: dict[FrameConnection, collections.deque[tuple[int, int]]] = {}
        """Per sender: (client bytes `submitted` after the batch, batches relayed so far) of
        batches not yet confirmed to it (`_confirm`)."""
        self._counted: dict[FrameConnection, int] = {}
        self._this_turn: dict[FrameConnection, int] = {}  # batches relayed in this loop turn
        self._confirm_due = False

    async def start(self, deadline: float) -> None:
        """Serve the channel, self-dial it, dial the client, start the heartbeat."""
        path = self.channel
        if path is None:  # no bootstrap: serve an ephemeral address nobody dials
            self._tmpdir = private_dir("ml-fwd-")
            path = os.path.join(self._tmpdir, "fwd.sock")
        self._server = await serve(path, self._accept)
        self_tx = guard_dialed(FrameConnection(_ignore), "forwarder_self", self.journal, ())
        self._self_tx = await dial(path, self_tx, deadline, what="self-dial")
        self._self_tx.send((wire.HELLO, "self", self._proof({})))
        if self.client_addr:
            client = FrameConnection(self._on_client_message, self._on_client_closed)
            guard_dialed(client, "forwarder_client", self.journal, CLIENT_KINDS)
            client.on_pause = self._pause_senders
            client.on_resume = self._resume_senders
            self.client = await dial(self.client_addr, client, deadline, what="log client")
            info = {"rank": self.rank, "hostname": self.hostname, "proc_id": self.proc_id}
            client.send((wire.HELLO, "forwarder", self._proof({**info, "pid": os.getpid()})))
        self.journal(Ev.FORWARDER_STARTED, rank=self.rank, channel=path)
        self._post_heartbeat()

    # -- served channel -------------------------------------------------------------------

    def _proof(self, info: dict[str, Any]) -> dict[str, Any]:
        """A HELLO's info with the mesh secret, when there is one."""
        return info if self.key is None else {**info, "secret": self.key.secret}

    def _accept(self) -> FrameConnection:
        conn = FrameConnection(self._on_channel_message, self._on_channel_closed)
        conn.on_raw = self._relay_raw
        return guard_accepted(
            conn,
            "forwarder_channel",
            self.journal,
            secret=None if self.key is None else self.key.secret,
            roles=("self", "sender"),
            kinds=CHANNEL_KINDS,
            max_lines=self.batch_lines,
            max_frame=wire.max_log_frame(self.batch_lines),
        )

    def _relay_raw(self, conn: FrameConnection, body: memoryview) -> bool:
        """The hot path: a Log frame is decoded and checked (at C speed: one unpack, one
        count of its newlines), then goes to the client as it came. A bad one raises
        FrameError, which closes only the connection that sent it."""
        if not wire.is_log(body):
            return False
        if conn.info.get("role") != "sender":
            raise wire.FrameError("a Log from a peer that is not a sender")
        wire.check_log(wire.decode(body), self.batch_lines)
        if self.stream_to_client and self.client is not None:
            self.client.send_frame(body, defer=True)
        self.relayed(conn)
        return True

    # -- confirming relayed batches to their sender (the host keeps them until then) -----

    def relayed(self, conn: FrameConnection) -> None:
        """One more Log batch of `conn` was passed on (or dropped: streaming is off); it is
        confirmed to the sender once the bytes have left this process (`_confirm`)."""
        turn = self._this_turn
        turn[conn] = turn.get(conn, 0) + 1
        if not self._confirm_due:
            self._confirm_due = True
            asyncio.get_running_loop().call_soon(self._confirm)  # after this turn's write

    def _confirm(self) -> None:
        """Ack to each sender the batches whose bytes have left for the client (a dead
        forwarder's unacked batches are the host's to deliver, through its fallback)."""
        self._confirm_due = False
        client = self.client
        if self._this_turn:  # this turn's batches left in one write, ending here
            end = client.submitted if client is not None and self.stream_to_client else -1
            for conn, n in self._this_turn.items():
                total = self._counted.get(conn, 0) + n
                self._counted[conn] = total
                pending = self._relayed.get(conn)
                if pending is None:
                    self._relayed[conn] = pending = collections.deque()
                pending.append((end, total))
            self._this_turn = {}
        left = client.left if client is not None else 0
        waiting = False
        for conn, pending in list(self._relayed.items()):
            if not conn.active:
                del self._relayed[conn]
                continue
            done = 0
            while pending and pending[0][0] <= left:
                done = pending.popleft()[1]
            if done:
                conn.send((wire.ACK, done))
            waiting = waiting or bool(pending)
        if waiting and client is not None and client.active:
            self._confirm_due = True
            asyncio.get_running_loop().call_later(CONFIRM_RETRY_S, self._confirm)

    def _on_channel_message(self, conn: FrameConnection, msg: list[Any]) -> None:
        kind = msg[0]
        role = conn.info.get("role")
        if kind == wire.LOG:  # validated by the guard (a Log the fast path did not spot)
            if role != "sender":
                raise wire.FrameError("a Log from a peer that is not a sender")
            if self.stream_to_client and self.client is not None:
                self.client.send(tuple(msg))
            self.relayed(conn)
        elif kind == wire.FLUSH:
            version = msg[1]
            if version is not None:
                self._marker_in(version, conn)
            elif conn.info.get("role") == "self":
                self._heartbeat_due = False
                asyncio.get_running_loop().call_later(HEARTBEAT_S, self._post_heartbeat)
            else:  # a sender's Flush(None): its stream hit EOF and its tail is in
                self.eof_streams.add(conn.info["stream"])
                self._check_tails()
        elif kind == wire.HELLO:
            if msg[1] == "sender":
                old = self.senders.get(msg[2]["stream"])
                if old is not None and old.active:
                    conn.refuse(f"a second sender for {msg[2]['stream']}")
                    return
            elif self._self_rx is not None:
                conn.refuse("a second self-dial")
                return
            else:
                self._self_rx = conn
            conn.info = {"role": msg[1], **msg[2]}
            if msg[1] == "sender":
                self.senders[msg[2]["stream"]] = conn
                if self._paused:
                    conn.pause_reading()
                if len(self.senders) == 2:
                    self.senders_ready.set()
        elif kind == wire.STOP:
            if role != "sender":
                raise wire.FrameError("a Stop from a peer that is not a sender")
            self.journal(Ev.STOP_REQUESTED)
            self.on_stop()

    def _on_channel_closed(self, conn: FrameConnection, exc: BaseException | None) -> None:
        if conn.info.get("role") != "sender":
            return
        stream = conn.info["stream"]
        if stream not in self.eof_streams:
            self.eof_streams.add(stream)
            self._check_tails()
        for version in list(self._pending):
            self._marker_in(version, conn)

    def _check_tails(self) -> None:
        if self.senders_ready.is_set() and len(self.eof_streams) >= 2:
            self.tails_done.set()

    def _post_heartbeat(self) -> None:
        if self._heartbeat_due or self._self_tx is None:
            return
        self._heartbeat_due = self._self_tx.send((wire.FLUSH, None))

    # -- barrier ------------------------------------------------------------------------

    def force_sync_flush(self, version: int) -> None:
        """Post Flush(version) in-band on the self-dial and ask every live sender to sync."""
        waiting: set[object] = {"self"}
        for conn in self.senders.values():
            if conn.send((wire.SYNC, version)):
                waiting.add(conn)
        self._pending[version] = waiting
        if self._self_tx is None or not self._self_tx.send((wire.FLUSH, version)):
            self._marker_in(version, "self")

    def _marker_in(self, version: int, source: object) -> None:
        if isinstance(source, FrameConnection) and source.info.get("role") == "self":
            source = "self"
        waiting = self._pending.get(version)
        if waiting is None:
            return
        waiting.discard(source)
        if not waiting:
            del self._pending[version]
            if self.client is not None:
                self.client.send((wire.FLUSH, version))
            self.on_ack(version)

    # -- client side ----------------------------------------------------------------------

    def _on_client_message(self, conn: FrameConnection, msg: list[Any]) -> None:
        kind = msg[0]
        if kind == wire.FORCE_SYNC:
            self.force_sync_flush(msg[1])
        elif kind == wire.SET_MODE:
            self.stream_to_client = bool(msg[1])

    def _on_client_closed(self, conn: FrameConnection, exc: BaseException | None) -> None:
        self._resume_senders()

    def _pause_senders(self) -> None:
        self._paused = True
        for conn in self.senders.values():
            conn.pause_reading()

    def _resume_senders(self) -> None:
        self._paused = False
        for conn in self.senders.values():
            conn.resume_reading()

    async def say_bye(self, deadline: float) -> bool:
        """Tell the client the tails are relayed and wait until that has left the process."""
        client = self.client
        if client is None:
            return True
        client.send((wire.BYE, {"eof_streams": sorted(self.eof_streams)}))
        sent = await client.flush_out(deadline)
        if sent:  # everything relayed has left: confirm it before the process goes
            self._confirm()
            for conn in list(self.senders.values()):
                await conn.flush_out(deadline)
        return sent

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.channel is not None and os.path.exists(self.channel):
            _unlink(self.channel)
        if self._tmpdir is not None:
            import shutil

            shutil.rmtree(self._tmpdir, ignore_errors=True)


def _ignore(conn: FrameConnection, msg: list[Any]) -> None:
    """The self-dial only sends."""


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
