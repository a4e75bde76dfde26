"""The `hostile_peer` fault: a local process of the same user attacks a rank's sockets.

The backend names its attack surface (`attack_surface(rank)`: socket name -> path; the
reference stack offers the rank's channel and the driver's client socket). For each
socket a real peer process dials it, sends the attack, and reports what the server did:
`closed` (it dropped the connection, as it must), `open` (it kept listening to the
attacker until the deadline), or `connect-error <errno>`. The attacker knows nothing of
the mesh's secret; what a mesh must show is that the attacked connection, and only it,
goes, and that every rank's lines still arrive and every barrier completes.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Mapping

from .stack import wire

PEER = r"""
import errno, select, socket, sys
path, size, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
payload = sys.stdin.buffer.read(size)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
except OSError as e:
    print("connect-error", errno.errorcode.get(e.errno, e.errno))
    sys.exit(0)
try:
    s.sendall(payload)
except OSError:
    pass
while True:
    ready, _, _ = select.select([s], [], [], wait)
    if not ready:
        print("open")
        break
    try:
        data = s.recv(65536)
    except OSError:
        data = b""
    if not data:
        print("closed")
        break
"""


def payload(attack: str, socket_name: str, rank: int) -> bytes:
    """The bytes a peer sends for `attack` to the socket `socket_name` of `rank`."""
    if attack == "garbage":
        return struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1" + b"\xff" * 64
    if attack == "oversized_header":
        return struct.pack(">I", 0xFFFFFFF0) + b"x" * 4096
    if attack == "malformed_log":
        return wire.frame(b"\x91\x00")  # [0]: a Log with none of its fields
    if attack == "impostor_hello":
        if socket_name == "client":
            info = {"rank": rank, "hostname": "impostor", "proc_id": f"proc[{rank}]", "pid": 1}
            hello = (wire.HELLO, "forwarder", info)
        else:
            hello = (wire.HELLO, "sender", {"stream": "stdout", "rank": rank})
        line = wire.encode((wire.LOG, "impostor", f"proc[{rank}]", 0, 1, b"[0] injected", 0))
        return wire.encode(hello) + line
    raise ValueError(f"unknown hostile_peer attack {attack!r}")


def attack(surface: Mapping[str, str], attack: str, rank: int, wait: float = 5.0) -> dict[str, str]:
    """Run one peer process per socket of `surface`; what each server did to it."""
    out: dict[str, str] = {}
    for name, path in surface.items():
        data = payload(attack, name, rank)
        proc = subprocess.run(
            [sys.executable, "-I", "-c", PEER, path, str(len(data)), str(wait)],
            input=data, capture_output=True, timeout=wait + 30,
        )  # fmt: skip
        out[name] = proc.stdout.decode().strip() or f"peer failed: {proc.stderr.decode()[-200:]}"
    return out
