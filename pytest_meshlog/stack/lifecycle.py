"""The states of a `LoggingMeshClient`, checked on every call (as pytest's capture does):
a call in a state where it makes no sense is a clear error naming the state and the call,
never a hang or a half-done teardown.

    new --spawn--> spawning --(all forwarders in)--> running --stop--> stopping --> stopped
     \\               \\ (spawn failed: spawn_failed)       \\                          |
      +-------------------------------------------------------+-- close --> closed <--+

`close()` is allowed in every state (idempotent); `stop()` after it stopped returns the
same outcome.
"""

from __future__ import annotations

from typing import Literal

from .outcomes import MeshError

MeshState = Literal["new", "spawning", "spawn_failed", "running", "stopping", "stopped", "closed"]

LIVE: tuple[MeshState, ...] = ("running",)
"""Where the mesh's children can be flushed, signalled, waited for or have faults injected."""
STOPPABLE: tuple[MeshState, ...] = ("new", "spawning", "spawn_failed", "running")
"""Where `stop()` starts a teardown (a mesh whose spawn failed is stopped as far as it got)."""


class MeshStateError(MeshError):
    """A call the mesh client cannot take in its current state."""


class Lifecycle:
    """The current state of one mesh client and its checked transitions."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.state: MeshState = "new"

    def check(self, call: str, allowed: tuple[MeshState, ...]) -> None:
        """MeshStateError unless the current state is one of `allowed`."""
        if self.state not in allowed:
            raise MeshStateError(
                f"{self.owner}.{call}() called in state {self.state!r}; it is allowed only "
                f"in {', '.join(map(repr, allowed))}"
            )

    def move(self, call: str, allowed: tuple[MeshState, ...], to: MeshState) -> None:
        """Check that `call` may run now, then enter state `to`."""
        self.check(call, allowed)
        self.state = to

    def __repr__(self) -> str:
        return f"Lifecycle({self.owner}: {self.state})"
