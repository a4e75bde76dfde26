"""Stack configuration read from the environment, validated before anything is spawned.

The knob names are those of the original runtime, so a user's existing environment
means the same thing here. A bad value is a `ConfigError` naming the variable and value.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

MAX_LINE_SIZE = 4096
"""Lines longer than this many bytes are truncated at a UTF-8 boundary (fixed, as upstream)."""

MAX_READ_LOG_BUFFER = 10_000
"""The most lines per batch: a batch of that many longest lines (about 42 MB) still fits
one frame of a trusted connection (64 MiB), and msgpack encodes any such count."""

READ_LOG_BUFFER = "HYPERACTOR_READ_LOG_BUFFER"
FORCE_FILE_LOG = "HYPERACTOR_FORCE_FILE_LOG"
PREFIX_WITH_RANK = "HYPERACTOR_PREFIX_WITH_RANK"
ENABLE_LOG_FORWARDING = "HYPERACTOR_MESH_ENABLE_LOG_FORWARDING"
ENV = "MESHLOG_ENV"
LOG_DIR = "MESHLOG_LOG_DIR"

Env = Literal["local", "test", "prod"]
ENVS: tuple[Env, ...] = ("local", "test", "prod")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A knob has a value the stack cannot use; raised before any child is spawned."""


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no)")


def parse_positive_int(name: str, raw: str, most: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not 1 <= value <= most:
        raise ConfigError(f"{name}={raw!r} must be from 1 to {most}")
    return value


def parse_read_log_buffer(name: str, raw: str) -> int:
    """Lines per batch, from 1 to MAX_READ_LOG_BUFFER (a bigger count once passed, then
    killed the host silently: msgpack cannot encode an int past 64 bits)."""
    return parse_positive_int(name, raw, MAX_READ_LOG_BUFFER)


def parse_env(name: str, raw: str) -> Env:
    value = raw.strip().lower()
    for env in ENVS:
        if value == env:
            return env
    raise ConfigError(f"{name}={raw!r} is not one of {', '.join(ENVS)}")


@dataclass(frozen=True)
class StackConfig:
    """Every knob the stack reads, with the upstream defaults."""

    read_log_buffer: int = 100
    force_file_log: bool = False
    prefix_with_rank: bool = True
    enable_log_forwarding: bool = False
    env: Env = "local"
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.read_log_buffer, bool) or not isinstance(self.read_log_buffer, int):
            raise ConfigError(f"read_log_buffer={self.read_log_buffer!r} is not an integer")
        if not 1 <= self.read_log_buffer <= MAX_READ_LOG_BUFFER:
            raise ConfigError(
                f"read_log_buffer={self.read_log_buffer!r} must be from 1 to {MAX_READ_LOG_BUFFER}"
            )
        if self.env not in ENVS:
            raise ConfigError(f"env={self.env!r} is not one of {', '.join(ENVS)}")
        for flag in ("force_file_log", "prefix_with_rank", "enable_log_forwarding"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag}={getattr(self, flag)!r} is not a bool")
        if self.log_dir == "":
            raise ConfigError("log_dir='' is empty: give a directory or None")
        if self.log_dir is not None:
            try:  # the hosts get it (and report their files) over msgpack, which needs UTF-8
                self.log_dir.encode()
            except UnicodeEncodeError:
                raise ConfigError(
                    f"log_dir={self.log_dir!r} is not valid UTF-8 (its bytes: "
                    f"{os.fsencode(self.log_dir)!r}): give a directory whose name is"
                ) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Read and validate the knobs; unset ones keep their defaults."""
        environ = os.environ if environ is None else environ
        cfg = cls()
        if READ_LOG_BUFFER in environ:
            cfg = replace(
                cfg,
                read_log_buffer=parse_read_log_buffer(READ_LOG_BUFFER, environ[READ_LOG_BUFFER]),
            )
        if FORCE_FILE_LOG in environ:
            cfg = replace(cfg, force_file_log=parse_bool(FORCE_FILE_LOG, environ[FORCE_FILE_LOG]))
        if PREFIX_WITH_RANK in environ:
            cfg = replace(
                cfg, prefix_with_rank=parse_bool(PREFIX_WITH_RANK, environ[PREFIX_WITH_RANK])
            )
        if ENABLE_LOG_FORWARDING in environ:
            cfg = replace(
                cfg,
                enable_log_forwarding=parse_bool(
                    ENABLE_LOG_FORWARDING, environ[ENABLE_LOG_FORWARDING]
                ),
            )
        if ENV in environ:
            cfg = replace(cfg, env=parse_env(ENV, environ[ENV]))
        if environ.get(LOG_DIR):
            cfg = replace(cfg, log_dir=environ[LOG_DIR])
        return cfg

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` return this config (for spawned processes)."""
        env = {
            READ_LOG_BUFFER: str(self.read_log_buffer),
            FORCE_FILE_LOG: str(self.force_file_log).lower(),
            PREFIX_WITH_RANK: str(self.prefix_with_rank).lower(),
            ENABLE_LOG_FORWARDING: str(self.enable_log_forwarding).lower(),
            ENV: self.env,
        }
        if self.log_dir is not None:
            env[LOG_DIR] = self.log_dir
        return env

    def file_log_gate(self) -> str | None:
        """Why per-proc files are off, or None when the FileAppender should be created."""
        if self.env == "test":
            return "file logging is unsupported in the test environment"
        if self.env == "local" and not self.force_file_log:
            return f"environment is local and {FORCE_FILE_LOG} is false"
        return None

    def check_log_dir(self) -> None:
        """When files will be written, make sure their directory can be: created if
        missing, else a ConfigError naming it (raised before any child is spawned)."""
        if self.file_log_gate() is not None:
            return
        directory, _ = self.file_log_location()
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"log dir {directory!r} cannot be created: {exc.strerror}") from None
        if not os.path.isdir(directory):
            raise ConfigError(f"log dir {directory!r} is not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"log dir {directory!r} is not writable")

    def file_log_location(self) -> tuple[str, str]:
        """(directory, basename) for per-proc files: the test's own dir when one is set."""
        if self.env == "local":
            user = os.environ.get("USER") or str(os.getuid())
            directory = self.log_dir or os.path.join(tempfile.gettempdir(), user)
            return directory, "monarch_log"
        return self.log_dir or "/logs", "dedicated_log_monarch"
