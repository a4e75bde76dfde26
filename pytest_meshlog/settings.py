"""Session-wide harness settings: command-line options, each with a `meshlog_*` ini twin.

Precedence for every setting: the command-line option, then the ini key, then (for the
stack knobs of SPEC 2) the `HYPERACTOR_*` environment variable, then the default. A test's
`meshlog` marker or `spawn()` argument overrides all of them for that test. A bad value
anywhere is a usage error that names the option, key or variable it came from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from .evidence_model import RULES
from .markers import MAX_PROCS
from .selection import Selection
from .stack.config import (
    FORCE_FILE_LOG,
    PREFIX_WITH_RANK,
    READ_LOG_BUFFER,
    ConfigError,
    parse_bool,
    parse_read_log_buffer,
)

SETTINGS = pytest.StashKey["Settings"]()
SELECTION = pytest.StashKey[Selection]()
"""Catalog ids taken from the command line (`selection.take_catalog_ids`)."""


def _bool(name: str, raw: str) -> bool:
    return parse_bool(name, raw)


def _int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(name: str, raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _str(name: str, raw: str) -> str:
    return raw


def _rules(name: str, raw: str) -> str:
    value = raw.strip()
    if value not in RULES:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(RULES)}")
    return value


@dataclass(frozen=True)
class Option:
    """One setting: its flag, ini key, parser, default and help; `flag_only` bools take no
    value on the command line (`--meshlog`), the others do (`--meshlog-procs 4`)."""

    flag: str
    ini: str
    parse: Callable[[str, str], Any]
    default: Any
    help: str
    flag_only: bool = False
    env: str | None = None  # the stack knob this option overrides (SPEC 2)
    per_test: bool = False
    """A `meshlog` marker argument of the same name overrides it (the stack knobs do too)."""

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def field(self) -> str:
        return "enabled" if self.ini == "meshlog" else self.ini.removeprefix("meshlog_")


OPTIONS: tuple[Option, ...] = (
    Option("--meshlog", "meshlog", _bool, False,
           "run the built-in teardown scenario catalog and print a teardown summary",
           flag_only=True),
    Option("--meshlog-stack", "meshlog_stack", _str, "reference",
           "stack backend to run meshes on (default: reference, the stack in this package)"),
    Option("--meshlog-seed", "meshlog_seed", _int, None,
           "seed for generated content (default: derived from each test's id); printed on failure"),
    Option("--meshlog-procs", "meshlog_procs", _int, 2, "default number of fake children per mesh"),
    Option("--meshlog-report", "meshlog_report", _str, None,
           "write a self-contained HTML report with a teardown timeline per test to this path"),
    Option("--meshlog-timeout", "meshlog_timeout", _float, 30.0,
           "deadline in seconds for each flush, stop and wait the harness makes"),
    Option("--meshlog-selftest", "meshlog_selftest", _bool, False,
           "run the catalog against deliberately broken stacks; fail unless each one is caught",
           flag_only=True),
    Option("--meshlog-random", "meshlog_random", _int, 0,
           "with --meshlog, add N generated (Hypothesis) scenarios to the catalog: "
           "meshlog::test_random[i]"),
    Option("--meshlog-spare-host", "meshlog_spare_host", _bool, False,
           "keep one warm bootstrap host between meshes (faster spawns; the host outlives "
           "each test until the session ends)", flag_only=True),
    Option("--meshlog-read-log-buffer", "meshlog_read_log_buffer", parse_read_log_buffer, None,
           f"lines per batch (default: ${READ_LOG_BUFFER}, else 100)", env=READ_LOG_BUFFER),
    Option("--meshlog-prefix-with-rank", "meshlog_prefix_with_rank", _bool, None,
           f"true/false: prefix lines with [rank] (default: ${PREFIX_WITH_RANK}, else true)",
           env=PREFIX_WITH_RANK),
    Option("--meshlog-force-file-log", "meshlog_force_file_log", _bool, None,
           f"true/false: per-proc files in the local environment too (default: "
           f"${FORCE_FILE_LOG}, else false)", env=FORCE_FILE_LOG),
    Option("--meshlog-rules", "meshlog_rules", _rules, None,
           "literal/strict: how a crash's client losses are judged: literal (default) allows "
           "the last batch of each stream, strict nothing that reached the pipe", per_test=True),
)  # fmt: skip

KNOB_OPTIONS = tuple(o for o in OPTIONS if o.env is not None)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshlog", "teardown-correctness harness for log-forwarding meshes")
    for opt in OPTIONS:
        if opt.flag_only:
            group.addoption(opt.flag, action="store_true", default=None, help=opt.help)
        else:
            group.addoption(opt.flag, action="store", default=None, help=opt.help)
        default = "" if opt.default is None else str(opt.default).lower()
        parser.addini(opt.ini, f"{opt.help} (default: {default or 'unset'})", default=None)
    leak_help = "check every test that uses the meshlog fixture (under --meshlog) or "
    leak_help += "meshlog_leak_check for leaked processes, descriptors and socket directories"
    group.addoption(
        "--meshlog-no-leak-check", action="store_true", default=False, help="turn off: " + leak_help
    )
    parser.addini("meshlog_leak_check", leak_help + " (default true)", default=None)


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    stack: str = "reference"
    seed: int | None = None
    procs: int = 2
    report: str | None = None
    timeout: float = 30.0
    selftest: bool = False
    random: int = 0
    spare_host: bool = False
    leak_check: bool = True
    knobs: Mapping[str, Any] = field(default_factory=dict)
    """Per-test settings set by option, ini or environment, as `meshlog` marker arguments
    (`read_log_buffer`, `prefix_with_rank`, `force_file_log`, `rules`); a marker overrides
    them."""
    selection: Selection = field(default_factory=Selection)
    knob_error: str | None = None
    """A bad stack knob in the environment: a usage error under --meshlog, else raised by
    the `meshlog` fixture (a project that never uses the harness is not disturbed by it)."""

    @classmethod
    def from_config(
        cls,
        config: pytest.Config,
        environ: Mapping[str, str] | None = None,
        selection: Selection | None = None,
    ) -> Settings:
        """Read and check every setting; a bad value is a `pytest.UsageError` naming it."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        knobs: dict[str, Any] = {}
        env_errors: list[str] = []
        for opt in OPTIONS:
            value = _read(config, opt)
            if value is None and opt.env is not None and opt.env in environ:
                try:
                    value = opt.parse(opt.env, environ[opt.env])
                except ConfigError as exc:
                    env_errors.append(f"environment variable {exc}")
            if opt.env is not None or opt.per_test:
                if value is not None:
                    knobs[opt.field] = value
                continue
            values[opt.field] = opt.default if value is None else value
        values["leak_check"] = not config.getoption("meshlog_no_leak_check") and _ini_value(
            config, "meshlog_leak_check", _bool, True
        )
        settings = cls(
            **values,
            knobs=knobs,
            selection=selection or Selection(),
            knob_error=env_errors[0] if env_errors else None,
        )
        settings._check()
        return settings

    def _check(self) -> None:
        if self.knob_error is not None and self.enabled:
            raise pytest.UsageError(self.knob_error)
        if not 1 <= self.procs <= MAX_PROCS:
            raise pytest.UsageError(f"--meshlog-procs={self.procs} must be from 1 to {MAX_PROCS}")
        if not 0 < self.timeout < math.inf:  # nan fails both
            raise pytest.UsageError(
                f"--meshlog-timeout={self.timeout} must be a finite number of seconds > 0"
            )
        if self.random < 0:
            raise pytest.UsageError(f"--meshlog-random={self.random} must be at least 0")
        if self.random and not self.enabled:
            raise pytest.UsageError(
                f"--meshlog-random={self.random} adds scenarios to the catalog, which runs only "
                "with --meshlog (or the ini key meshlog = true): add --meshlog"
            )
        if self.selection.ids and not self.enabled:
            raise pytest.UsageError(
                f"{self.selection.ids[0]} names an item of the meshlog catalog, which runs only "
                "with --meshlog (or the ini key meshlog = true): add --meshlog"
            )


def _read(config: pytest.Config, opt: Option) -> Any:
    """The option's value from the command line, else the ini file, else None (the ini
    value is checked either way: a bad one is an error even when the option overrides it)."""
    from_ini = _ini_value(config, opt.ini, opt.parse, None)
    raw = config.getoption(opt.dest)
    if raw is None:
        return from_ini
    if opt.flag_only:
        return bool(raw)
    return _parse(opt.parse, opt.flag, str(raw))


def _ini_value(
    config: pytest.Config, key: str, parse: Callable[[str, str], Any], default: Any
) -> Any:
    raw = config.getini(key)
    if raw is None or raw == "" or raw == []:
        return default
    if isinstance(raw, bool):  # a native TOML boolean in [tool.pytest]
        raw = str(raw).lower()
    return _parse(parse, f"ini {key}", str(raw))


def _parse(parse: Callable[[str, str], Any], name: str, raw: str) -> Any:
    try:
        return parse(name, raw)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
