"""Named script factories, and `FakeProcs`: the object the `fake_procs` fixture returns.

A plugin adds scripts from `pytest_meshlog_add_scripts(catalog)` with
`catalog.add("name", factory)`; a factory is called as `factory(*args, seed=..., **kw)`
and must return a `Script`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import library
from .content import Flavour, derive_seed
from .scripts import Script, script
from .steps import CrashHow, Mode, Stream

ScriptFactory = Callable[..., Script]


class Catalog:
    """A registry of script factories by name."""

    def __init__(self, entries: Mapping[str, ScriptFactory] | None = None) -> None:
        self._entries: dict[str, ScriptFactory] = {}
        for name, factory in (entries or {}).items():
            self.add(name, factory)

    def add(self, name: str, factory: ScriptFactory, *, replace: bool = False) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"script name {name!r} must be a Python identifier")
        if not callable(factory):
            raise TypeError(f"factory for {name!r} is not callable: {factory!r}")
        if name in self._entries and not replace:
            raise ValueError(f"a script named {name!r} is already registered")
        self._entries[name] = factory

    def get(self, name: str) -> ScriptFactory:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"no script named {name!r} (known: {known})") from None

    def build(self, name: str, *args: Any, seed: int, **params: Any) -> Script:
        """Call the factory; name the result after the entry if the factory did not."""
        result = self.get(name)(*args, seed=seed, **params)
        if not isinstance(result, Script):
            raise TypeError(f"script factory {name!r} returned {type(result).__name__}, not Script")
        return result if result.name else result.named(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def default_catalog() -> Catalog:
    """A fresh catalog holding the ready-made scripts of SPEC 3.2."""
    return Catalog(
        {
            "crasher": library.crasher,
            "partial_line_writer": library.partial_line_writer,
            "interleaver": library.interleaver,
            "flooder": library.flooder,
            "long_liner": library.long_liner,
            "binary_writer": library.binary_writer,
            "slow_drip": library.slow_drip,
            "silent": library.silent,
            "hanger": library.hanger,
        }
    )


class FakeProcs:
    """Builds scripts for one test. Each call gets its own seed derived from `seed` and
    the call's position, so two crashers differ but the test replays from `seed`."""

    def __init__(self, seed: int = 0, catalog: Catalog | None = None) -> None:
        self.seed = seed
        self.catalog = catalog if catalog is not None else default_catalog()
        self._calls = 0

    def next_seed(self) -> int:
        self._calls += 1
        return derive_seed(self.seed, "fake_procs", self._calls)

    def script(
        self, seed: int | None = None, *, name: str = "", flavour: Flavour = "mixed"
    ) -> Script:
        """An empty script to chain steps on."""
        return script(self.next_seed() if seed is None else seed, name=name, flavour=flavour)

    def make(self, name: str, *args: Any, **params: Any) -> Script:
        """A catalog script by name (built-in or added by a plugin)."""
        return self.catalog.build(name, *args, seed=self.next_seed(), **params)

    def __getattr__(self, name: str) -> Callable[..., Script]:
        if name.startswith("_") or name not in self.__dict__.get("catalog", ()):
            raise AttributeError(name)
        return lambda *args, **params: self.make(name, *args, **params)

    def crasher(self, after_lines: int = 3, how: CrashHow = "exit") -> Script:
        return self.make("crasher", after_lines, how)

    def partial_line_writer(self, lines: int = 3, tail: str | None = None) -> Script:
        return self.make("partial_line_writer", lines, tail)

    def interleaver(self, lines: int = 20, *, mode: Mode = "fd") -> Script:
        return self.make("interleaver", lines, mode=mode)

    def flooder(
        self,
        lines: int = 1000,
        line_bytes: int = 100,
        *,
        stream: Stream = "stdout",
        mode: Mode = "fd",
    ) -> Script:
        return self.make("flooder", lines, line_bytes, stream=stream, mode=mode)

    def long_liner(self, nbytes: int = 10_000, *, stream: Stream = "stdout") -> Script:
        return self.make("long_liner", nbytes, stream=stream)

    def binary_writer(self, lines: int = 8, *, stream: Stream = "stdout") -> Script:
        return self.make("binary_writer", lines, stream=stream)

    def slow_drip(self, lines: int = 10, interval: float = 0.05) -> Script:
        return self.make("slow_drip", lines, interval)

    def silent(self) -> Script:
        return self.make("silent")

    def hanger(self, lines: int = 1) -> Script:
        return self.make("hanger", lines)
