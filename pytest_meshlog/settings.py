"""Session-wide harness settings: command-line options, each with a `meshlog_*` ini twin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

# (option, ini key, type, default, help)
OPTIONS: tuple[tuple[str, str, type, Any, str], ...] = (
    ("--meshlog", "meshlog", bool, False,
     "run the built-in teardown scenario catalog and print a teardown summary"),
    ("--meshlog-stack", "meshlog_stack", str, "reference",
     "stack backend to run meshes on (default: reference, the stack in this package)"),
    ("--meshlog-seed", "meshlog_seed", int, None,
     "seed for generated content (default: derived from each test's id); printed on failure"),
    ("--meshlog-procs", "meshlog_procs", int, 2, "default number of fake children per mesh"),
    ("--meshlog-report", "meshlog_report", str, None,
     "write a self-contained HTML report with a teardown timeline per test to this path"),
    ("--meshlog-timeout", "meshlog_timeout", float, 30.0,
     "deadline in seconds for each flush, stop and wait the harness makes"),
    ("--meshlog-selftest", "meshlog_selftest", bool, False,
     "run the catalog against deliberately broken stacks; fail unless each one is caught"),
    ("--meshlog-random", "meshlog_random", int, 0,
     "with --meshlog, add N generated (Hypothesis) scenarios to the catalog: meshlog/random[i]"),
)  # fmt: skip


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshlog", "teardown-correctness harness for log-forwarding meshes")
    for flag, ini, kind, default, help_text in OPTIONS:
        if kind is bool:
            group.addoption(flag, action="store_true", default=None, help=help_text)
            parser.addini(ini, help_text, type="bool", default=default)
        else:
            group.addoption(flag, action="store", type=kind, default=None, help=help_text)
            parser.addini(ini, help_text, default=None if default is None else str(default))
    leak_help = "check every test that uses the meshlog fixture (under --meshlog) or "
    leak_help += "meshlog_leak_check for leaked processes, descriptors and socket directories"
    group.addoption(
        "--meshlog-no-leak-check", action="store_true", default=False, help="turn off: " + leak_help
    )
    parser.addini("meshlog_leak_check", leak_help + " (default true)", type="bool", default=True)


@dataclass(frozen=True)
class Settings:
    enabled: bool
    stack: str
    seed: int | None
    procs: int
    report: str | None
    timeout: float
    selftest: bool
    leak_check: bool = True
    random: int = 0

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        values: dict[str, Any] = {}
        for flag, ini, kind, default, _ in OPTIONS:
            value = config.getoption(flag)
            if value is None:
                try:
                    raw = config.getini(ini)
                except ValueError as exc:
                    raise pytest.UsageError(f"ini {ini}: {exc}") from None
                if kind is bool:
                    value = bool(raw)
                elif raw in (None, ""):
                    value = default
                else:
                    try:
                        value = kind(raw)
                    except ValueError:
                        what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
                        raise pytest.UsageError(f"ini {ini}={raw!r} is not {what}") from None
            values[ini.removeprefix("meshlog_") if ini != "meshlog" else "enabled"] = value
        values["leak_check"] = not config.getoption("meshlog_no_leak_check") and bool(
            config.getini("meshlog_leak_check")
        )
        settings = cls(**values)
        if settings.procs < 1:
            raise pytest.UsageError(f"--meshlog-procs={settings.procs} must be at least 1")
        if settings.timeout <= 0:
            raise pytest.UsageError(f"--meshlog-timeout={settings.timeout} must be positive")
        if settings.random < 0:
            raise pytest.UsageError(f"--meshlog-random={settings.random} must be at least 0")
        return settings
