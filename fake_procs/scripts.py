"""`Script`: an immutable, validated, JSON-serialisable list of steps, with a fluent builder.

Each builder call returns a new Script, checked as it is built, so
`script(seed=1).line("a").crash("sigkil")` raises `ScriptError` at the typo. Generated
content (Faker) is resolved here, in the driver; the JSON carries the resulting text and
corpus, so the child needs no generator and a script replays byte for byte.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from . import content
from .steps import (
    AnyStep,
    Barrier,
    Close,
    Crash,
    CrashHow,
    Exit,
    Flood,
    Flush,
    Grandchild,
    Hang,
    Interleave,
    Line,
    Mode,
    Partial,
    Raw,
    ScriptError,
    Sleep,
    Step,
    Stream,
    check_step,
    step_from_dict,
)

FORMAT = "fake_procs/1"
CHILD_MODULE = "fake_procs"

_NEEDS_CORPUS = (Flood, Interleave)


class _Placement:
    """What earlier steps imply for later ones: closed streams, an end that never returns."""

    __slots__ = ("closed", "end")

    def __init__(self) -> None:
        self.closed: dict[str, int] = {}
        self.end: tuple[int, str] | None = None

    def copy(self) -> _Placement:
        other = _Placement()
        other.closed = dict(self.closed)
        other.end = self.end
        return other

    def place(self, index: int, step: Step) -> None:
        if self.end is not None:
            at, kind = self.end
            raise ScriptError(
                f"unreachable: step {at} ({kind}) never returns", index=index, kind=step.kind
            )
        streams: tuple[str, ...] = step.writes()
        if isinstance(step, (Flush, Close)) and step.stream is not None:
            streams = (step.stream,)
        for stream in streams:
            if stream in self.closed:
                raise ScriptError(
                    f"stream={stream!r} was closed at step {self.closed[stream]}",
                    index=index,
                    kind=step.kind,
                )
        if isinstance(step, Close):
            self.closed[step.stream] = index
        if step.terminal:
            self.end = (index, step.kind)


def _check_corpus(corpus: object) -> tuple[str, ...]:
    if isinstance(corpus, (str, bytes)) or not isinstance(corpus, Sequence):
        raise ScriptError(f"corpus={corpus!r} must be a list of sentences")
    for i, text in enumerate(corpus):
        if not isinstance(text, str) or not text or "\n" in text or "\r" in text:
            raise ScriptError(f"corpus[{i}]={text!r} must be a non-empty one-line str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ScriptError(f"corpus[{i}]={text!r} is not encodable as UTF-8") from None
    return tuple(corpus)


class Script:
    """A fake child's behaviour as data. Build with `script(seed=...)` and chain steps."""

    __slots__ = ("_corpus", "_flavour", "_name", "_placement", "_seed", "_steps")

    _steps: tuple[AnyStep, ...]
    _seed: int
    _corpus: tuple[str, ...]
    _flavour: content.Flavour
    _name: str
    _placement: _Placement

    def __init__(
        self,
        steps: Iterable[AnyStep] = (),
        *,
        seed: int = 0,
        corpus: Sequence[str] | None = None,
        name: str = "",
        flavour: content.Flavour = "mixed",
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ScriptError(f"seed={seed!r} must be an integer")
        if not isinstance(name, str):
            raise ScriptError(f"name={name!r} must be a str")
        if flavour not in content.FLAVOURS:
            raise ScriptError(f"flavour={flavour!r} must be one of {', '.join(content.FLAVOURS)}")
        steps = tuple(steps)
        placement = _Placement()
        for index, step in enumerate(steps):
            check_step(index, step)
            placement.place(index, step)
        if corpus is None:
            needed = any(isinstance(s, _NEEDS_CORPUS) for s in steps)
            corpus = content.corpus(seed, flavour=flavour) if needed else ()
        self._init(steps, seed, _check_corpus(corpus), name, flavour, placement)

    def _init(
        self,
        steps: tuple[AnyStep, ...],
        seed: int,
        corpus: tuple[str, ...],
        name: str,
        flavour: content.Flavour,
        placement: _Placement,
    ) -> None:
        for attr, value in (
            ("_steps", steps),
            ("_seed", seed),
            ("_corpus", corpus),
            ("_name", name),
            ("_flavour", flavour),
            ("_placement", placement),
        ):
            object.__setattr__(self, attr, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Script is immutable (tried to set {name})")

    # -- data ------------------------------------------------------------------------------

    @property
    def steps(self) -> tuple[AnyStep, ...]:
        return self._steps

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def corpus(self) -> tuple[str, ...]:
        return self._corpus

    @property
    def name(self) -> str:
        return self._name

    @property
    def flavour(self) -> content.Flavour:
        return self._flavour

    @property
    def end(self) -> AnyStep | None:
        """The step the script ends in when nothing can follow it (exit, crash or hang),
        or None when the script runs off its last step."""
        if self._steps and self._steps[-1].terminal:
            return self._steps[-1]
        return None

    def line_count(self) -> int:
        """How many complete lines the script writes (both streams)."""
        return sum(step.line_count() for step in self._steps)

    def cut_after_lines(self, n: int) -> Script:
        """The script up to the step that completes its first `n` lines, without its end
        (so another end can follow): `s.cut_after_lines(3).crash()` dies after 3 lines."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ScriptError(f"cut_after_lines(n={n!r}): n must be an int >= 0")
        kept: list[AnyStep] = []
        written = 0
        for step in self._steps:
            if written >= n or step.terminal:
                break
            kept.append(step)
            written += step.line_count()
        return Script(
            kept, seed=self._seed, corpus=self._corpus, name=self._name, flavour=self._flavour
        )

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> Iterator[AnyStep]:
        return iter(self._steps)

    def _key(self) -> tuple[object, ...]:
        return (self._steps, self._seed, self._corpus, self._name, self._flavour)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Script) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        kinds = ", ".join(s.kind for s in self._steps[:8]) + (", ..." if len(self) > 8 else "")
        return f"<Script {self._name or 'unnamed'} seed={self._seed} steps=[{kinds}]>"

    def named(self, name: str) -> Script:
        """The same script under another name (names show up in reports and ids)."""
        if not isinstance(name, str):
            raise ScriptError(f"name={name!r} must be a str")
        new = object.__new__(Script)
        new._init(self._steps, self._seed, self._corpus, name, self._flavour, self._placement)
        return new

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self._name,
            "seed": self._seed,
            "flavour": self._flavour,
            "corpus": list(self._corpus),
            "steps": [s.to_dict() for s in self._steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Script:
        if not isinstance(data, Mapping):
            raise ScriptError(f"must be a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ScriptError(f"format={data.get('format')!r} is not {FORMAT!r}")
        unknown = sorted(set(data) - {"format", "name", "seed", "flavour", "corpus", "steps"})
        if unknown:
            raise ScriptError(f"unknown key(s) {', '.join(unknown)}")
        raw_steps = data.get("steps", [])
        if not isinstance(raw_steps, list):
            raise ScriptError(f"steps={raw_steps!r} must be a list")
        steps = [step_from_dict(i, raw) for i, raw in enumerate(raw_steps)]
        return cls(
            steps,
            seed=data.get("seed", 0),
            corpus=data.get("corpus"),
            name=data.get("name", ""),
            flavour=data.get("flavour", "mixed"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Script:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ScriptError(f"not JSON: {exc}") from None
        return cls.from_dict(data)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON a child reads: `python -m fake_procs <path>`."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @staticmethod
    def child_argv(path: str | os.PathLike[str], python: str | None = None) -> list[str]:
        """The command line of a mesh child running the script stored at `path`."""
        return [python or sys.executable, "-m", CHILD_MODULE, os.fspath(path)]

    # -- builder ---------------------------------------------------------------------------

    def then(self, step: AnyStep) -> Script:
        """This script plus one more step (validated now, with its index)."""
        index = len(self._steps)
        check_step(index, step)
        placement = self._placement.copy()
        placement.place(index, step)
        corpus = self._corpus
        if not corpus and isinstance(step, _NEEDS_CORPUS):
            corpus = content.corpus(self._seed, flavour=self._flavour)
        new = object.__new__(Script)
        new._init((*self._steps, step), self._seed, corpus, self._name, self._flavour, placement)
        return new

    def _text(self, text: str | None, tag: bool | None) -> tuple[str, bool]:
        if text is None:
            generated = content.sentence(self._seed, len(self._steps), self._flavour)
            return generated, True if tag is None else tag
        return text, False if tag is None else tag

    def line(
        self,
        text: str | None = None,
        *,
        stream: Stream = "stdout",
        mode: Mode = "fd",
        tag: bool | None = None,
    ) -> Script:
        """A complete line. No text: a generated sentence, tagged unless `tag=False`."""
        text, tag = self._text(text, tag)
        return self.then(Line(text=text, stream=stream, mode=mode, tag=tag))

    def partial(
        self,
        text: str | None = None,
        *,
        stream: Stream = "stdout",
        mode: Mode = "fd",
        tag: bool | None = None,
    ) -> Script:
        """Text with no newline. No text: a generated sentence, tagged unless `tag=False`."""
        text, tag = self._text(text, tag)
        return self.then(Partial(text=text, stream=stream, mode=mode, tag=tag))

    def raw(
        self, data: bytes, *, stream: Stream = "stdout", mode: Mode = "fd", tag: bool = False
    ) -> Script:
        """Bytes exactly as given (invalid UTF-8, CR, NUL, several newlines...)."""
        return self.then(Raw(data=data, stream=stream, mode=mode, tag=tag))

    def flood(
        self, n: int, line_bytes: int = 80, *, stream: Stream = "stdout", mode: Mode = "fd"
    ) -> Script:
        """`n` tagged lines of `line_bytes` bytes each (newline excluded), as fast as possible."""
        return self.then(Flood(n=n, line_bytes=line_bytes, stream=stream, mode=mode))

    def interleave(self, n: int, *, line_bytes: int | None = None, mode: Mode = "fd") -> Script:
        """`n` tagged lines alternating stdout and stderr."""
        return self.then(Interleave(n=n, line_bytes=line_bytes, mode=mode))

    def flush(self, stream: Stream | None = None) -> Script:
        """Flush sys.stdout/sys.stderr's buffer (both when `stream` is None)."""
        return self.then(Flush(stream=stream))

    def sleep(self, seconds: float) -> Script:
        return self.then(Sleep(seconds=seconds))

    def close(self, stream: Stream) -> Script:
        """Close one stream early (the tee sees EOF on it while the child lives on)."""
        return self.then(Close(stream=stream))

    def barrier(self, timeout: float = 30.0) -> Script:
        """Wait until the next barrier is acked (or `timeout`), then continue."""
        return self.then(Barrier(timeout=timeout))

    def grandchild(
        self, stream: Literal["stdout", "stderr", "both"] = "stdout", seconds: float = 60.0
    ) -> Script:
        """Start a grandchild that holds `stream` open for `seconds`, writing nothing."""
        return self.then(Grandchild(stream=stream, seconds=seconds))

    def exit(self, code: int = 0) -> Script:
        """`os._exit(code)`: abrupt, nothing buffered is flushed."""
        return self.then(Exit(code=code))

    def crash(self, how: CrashHow = "sigkill") -> Script:
        return self.then(Crash(how=how))

    def hang(self) -> Script:
        """Block until the runtime stops the child."""
        return self.then(Hang())


def script(seed: int = 0, *, name: str = "", flavour: content.Flavour = "mixed") -> Script:
    """An empty script to chain steps on: `script(seed=7).line().partial("tail")`."""
    return Script(seed=seed, name=name, flavour=flavour)
