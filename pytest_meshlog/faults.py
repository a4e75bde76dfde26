"""The fault kinds of `@pytest.mark.meshlog_fault(kind, rank=0, **params)`: one table.

Each kind says what it does at each stage of a mesh's life, in the order the harness
runs them (a stage a kind leaves at None does nothing for it):

* `check`: its parameters, validated when the marker is parsed (a problem is a
  collection error naming the value);
* `needs`: the backend feature it needs (`backend.not_applicable`), else the test skips;
* plan: `host_env`, environment every host gets from its first line on, and
  `client_delay`, seconds the driver's client spends per batch;
* `script`: a change to the targeted rank's script;
* `after_launch`: what is done to the running mesh once it is up;
* `at_stop`: what is done to it just before it is stopped;
* `faults_rank`: whether the targeted rank is counted as faulted (its losses are allowed).

Runs without importing the harness: the stages get the mesh as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fake_procs import Script

    from .harness import Mesh
    from .markers import Fault

HOSTILE_ATTACKS = ("garbage", "oversized_header", "malformed_log", "impostor_hello")
"""What a `hostile_peer` sends to each socket of the rank's attack surface (see hostile.py)."""

CRASH_HOWS = ("exit", "sigkill", "sigsegv", "abort")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_crash(params: Mapping[str, Any]) -> str | None:
    how, after = params["how"], params["after_lines"]
    if how not in CRASH_HOWS:
        return f"crash how={how!r} is not exit, sigkill, sigsegv or abort"
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        return f"crash after_lines={after!r} must be an int >= 0"
    return None


def _check_delay(kind: str) -> Callable[[Mapping[str, Any]], str | None]:
    def check(params: Mapping[str, Any]) -> str | None:
        delay = params["delay"]
        if _is_number(delay) and 0 <= delay <= 5:
            return None
        return f"{kind} delay={delay!r} must be a number of seconds in [0, 5]"

    return check


def _check_attack(params: Mapping[str, Any]) -> str | None:
    attack = params["attack"]
    if attack in HOSTILE_ATTACKS:
        return None
    return f"hostile_peer attack={attack!r} is not one of {', '.join(HOSTILE_ATTACKS)}"


def _crash_script(script: Script, fault: Fault) -> Script:
    return script.cut_after_lines(fault.param("after_lines")).crash(fault.param("how"))


def _hang_script(script: Script, fault: Fault) -> Script:
    return script if script.end is not None else script.hang()


def _close_channel(mesh: Mesh, fault: Fault) -> None:
    mesh.client.inject(fault.rank, "close_channel")


def _hostile_peer(mesh: Mesh, fault: Fault) -> None:
    import pytest

    from .hostile import attack

    surface = getattr(mesh.client, "attack_surface", None)  # an optional member
    if surface is None:
        mesh.stop()
        pytest.skip(f"stack {mesh.stack} names no attack_surface(rank)")
    mesh.hostile.update(attack(surface(fault.rank), fault.param("attack"), fault.rank))


def _kill_forwarder(mesh: Mesh, fault: Fault) -> None:
    mesh.kill(fault.rank)


@dataclass(frozen=True)
class FaultKind:
    """What one kind of fault does at each stage (see the module's docstring)."""

    what: str
    params: Mapping[str, Any] = field(default_factory=dict)
    """Each parameter and its default."""
    check: Callable[[Mapping[str, Any]], str | None] | None = None
    host_env: Callable[[Fault], Mapping[str, str]] | None = None
    client_delay: Callable[[Fault], float] | None = None
    script: Callable[[Script, Fault], Script] | None = None
    after_launch: Callable[[Mesh, Fault], None] | None = None
    at_stop: Callable[[Mesh, Fault], None] | None = None
    faults_rank: bool = False


FAULTS: dict[str, FaultKind] = {
    "crash": FaultKind(
        "the rank dies by `how` after `after_lines` lines of its script",
        {"how": "sigkill", "after_lines": 0},
        check=_check_crash,
        script=_crash_script,
        faults_rank=True,
    ),
    "sigkill_forwarder": FaultKind(
        "the rank's forwarder (its whole process) is killed just before the stop",
        at_stop=_kill_forwarder,
        faults_rank=True,
    ),
    "close_channel": FaultKind(
        "the forwarder's channel closes once the mesh is up: the senders' lines go nowhere",
        after_launch=_close_channel,
        faults_rank=True,
    ),
    "slow_client": FaultKind(
        "the driver's client spends `delay` seconds on each batch it prints",
        {"delay": 0.01},
        check=_check_delay("slow_client"),
        client_delay=lambda fault: float(fault.param("delay")),
    ),
    "file_write_error": FaultKind(
        "every file write of the hosts fails, as on a full disk",
        host_env=lambda fault: {"MESHLOG_FAULT_FILE_ERRORS": "1"},
    ),
    "slow_files": FaultKind(
        "every file write of the hosts takes `delay` seconds more (a slow disk)",
        {"delay": 0.01},
        check=_check_delay("slow_files"),
        host_env=lambda fault: {"MESHLOG_FAULT_FILE_DELAY": str(float(fault.param("delay")))},
    ),
    "hang": FaultKind(
        "the rank never finishes its script on its own (unless the script ends it)",
        script=_hang_script,
    ),
    "hostile_peer": FaultKind(
        "a local peer of the same user sends `attack` to each socket of the rank",
        {"attack": "garbage"},
        check=_check_attack,
        after_launch=_hostile_peer,
    ),
}

FAULT_KINDS: dict[str, set[str]] = {name: set(kind.params) for name, kind in FAULTS.items()}
"""Each kind's parameters (besides `rank`)."""


def needs(fault: Fault) -> str:
    """The backend feature a fault needs (see `backend.not_applicable`)."""
    return f"fault:{fault.kind}"


def problem(kind: str, params: Mapping[str, Any]) -> str | None:
    """What is wrong with a kind's parameters (defaults filled in), or None."""
    check = FAULTS[kind].check
    return None if check is None else check({**FAULTS[kind].params, **params})


# -- the stages, over all of a test's faults in marker order -------------------------------


def host_env(faults: Iterable[Fault]) -> dict[str, str]:
    """Environment for every host: host-wide faults hold from the first line on."""
    env: dict[str, str] = {}
    for fault in faults:
        make = FAULTS[fault.kind].host_env
        if make is not None:
            env.update(make(fault))
    return env


def client_delay(faults: Iterable[Fault]) -> float:
    """Seconds the driver's client spends per batch (the first fault that sets it)."""
    for fault in faults:
        delay = FAULTS[fault.kind].client_delay
        if delay is not None:
            return delay(fault)
    return 0.0


def change_scripts(faults: Iterable[Fault], scripts: tuple[Script, ...]) -> tuple[Script, ...]:
    """The scripts with each fault's change applied to its rank."""
    out = list(scripts)
    for fault in faults:
        if fault.rank >= len(out):
            raise ValueError(
                f"meshlog_fault {fault.kind!r} targets rank {fault.rank} but the mesh has "
                f"{len(out)} children (ranks 0..{len(out) - 1})"
            )
        change = FAULTS[fault.kind].script
        if change is not None:
            out[fault.rank] = change(out[fault.rank], fault)
    return tuple(out)


def after_launch(faults: Iterable[Fault], mesh: Mesh) -> None:
    for fault in faults:
        act = FAULTS[fault.kind].after_launch
        if act is not None:
            act(mesh, fault)


def at_stop(faults: Iterable[Fault], mesh: Mesh) -> None:
    for fault in faults:
        act = FAULTS[fault.kind].at_stop
        if act is not None:
            act(mesh, fault)


def faulted_ranks(faults: Iterable[Fault]) -> frozenset[int]:
    """The ranks whose losses the faults allow."""
    return frozenset(f.rank for f in faults if FAULTS[f.kind].faults_rank)
