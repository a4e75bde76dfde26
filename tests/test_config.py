"""Configuration knobs (SPEC 2): defaults, parsing, clear errors, and the file-log gate."""

from __future__ import annotations

import itertools
import os
import tempfile

import pytest

from pytest_meshlog.stack import config, wire
from pytest_meshlog.stack.config import ConfigError, StackConfig

ALL_KNOBS = (
    config.READ_LOG_BUFFER,
    config.FORCE_FILE_LOG,
    config.PREFIX_WITH_RANK,
    config.ENABLE_LOG_FORWARDING,
    config.ENV,
    config.LOG_DIR,
)


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any knob, so a developer's shell cannot leak in."""
    for name in ALL_KNOBS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_knob_names_are_the_upstream_ones() -> None:
    assert config.READ_LOG_BUFFER == "HYPERACTOR_READ_LOG_BUFFER"
    assert config.FORCE_FILE_LOG == "HYPERACTOR_FORCE_FILE_LOG"
    assert config.PREFIX_WITH_RANK == "HYPERACTOR_PREFIX_WITH_RANK"
    assert config.ENABLE_LOG_FORWARDING == "HYPERACTOR_MESH_ENABLE_LOG_FORWARDING"
    assert config.MAX_LINE_SIZE == 4096


def test_defaults() -> None:
    cfg = StackConfig()
    assert cfg.read_log_buffer == 100
    assert cfg.force_file_log is False
    assert cfg.prefix_with_rank is True
    assert cfg.enable_log_forwarding is False
    assert cfg.env == "local"
    assert cfg.log_dir is None
    assert StackConfig.from_env({}) == cfg


def test_from_env_reads_process_environment(clean_environ: pytest.MonkeyPatch) -> None:
    assert StackConfig.from_env() == StackConfig()
    clean_environ.setenv(config.READ_LOG_BUFFER, "7")
    assert StackConfig.from_env().read_log_buffer == 7


def test_every_knob_parsed() -> None:
    cfg = StackConfig.from_env(
        {
            config.READ_LOG_BUFFER: "250",
            config.FORCE_FILE_LOG: "true",
            config.PREFIX_WITH_RANK: "false",
            config.ENABLE_LOG_FORWARDING: "1",
            config.ENV: "prod",
            config.LOG_DIR: "/var/tmp/meshlog",
            "UNRELATED": "ignored",
        }
    )
    assert cfg == StackConfig(
        read_log_buffer=250,
        force_file_log=True,
        prefix_with_rank=False,
        enable_log_forwarding=True,
        env="prod",
        log_dir="/var/tmp/meshlog",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True), (" True ", True),
        ("false", False), ("False", False), ("0", False), ("no", False), ("off", False),
    ],
)  # fmt: skip
@pytest.mark.parametrize(
    ("name", "field"),
    [
        (config.FORCE_FILE_LOG, "force_file_log"),
        (config.PREFIX_WITH_RANK, "prefix_with_rank"),
        (config.ENABLE_LOG_FORWARDING, "enable_log_forwarding"),
    ],
)
def test_boolean_spellings(name: str, field: str, raw: str, expected: bool) -> None:
    assert getattr(StackConfig.from_env({name: raw}), field) is expected


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("100", 100), (" 42\n", 42)])
def test_read_log_buffer_values(raw: str, expected: int) -> None:
    assert StackConfig.from_env({config.READ_LOG_BUFFER: raw}).read_log_buffer == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("local", "local"), ("TEST", "test"), (" prod", "prod")]
)
def test_env_values(raw: str, expected: str) -> None:
    assert StackConfig.from_env({config.ENV: raw}).env == expected


def _assert_names(err: pytest.ExceptionInfo[ConfigError], name: str, raw: str) -> None:
    message = str(err.value)
    assert name in message
    assert repr(raw) in message


@pytest.mark.parametrize(
    "raw", ["abc", "0", "-3", "", "1.5", "ten", "0x10", "10001", str(2**64), str(2**64 + 1)]
)
def test_bad_read_log_buffer(raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        StackConfig.from_env({config.READ_LOG_BUFFER: raw})
    _assert_names(err, config.READ_LOG_BUFFER, raw)


@pytest.mark.parametrize("raw", ["maybe", "", "2", "tru", "y"])
@pytest.mark.parametrize(
    "name", [config.FORCE_FILE_LOG, config.PREFIX_WITH_RANK, config.ENABLE_LOG_FORWARDING]
)
def test_bad_booleans(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        StackConfig.from_env({name: raw})
    _assert_names(err, name, raw)


@pytest.mark.parametrize("raw", ["staging", "", "Local2", "dev"])
def test_bad_env(raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        StackConfig.from_env({config.ENV: raw})
    _assert_names(err, config.ENV, raw)
    assert "local" in str(err.value)  # says what would have been accepted


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_first_bad_knob_fails_even_with_good_ones() -> None:
    with pytest.raises(ConfigError, match=config.ENV):
        StackConfig.from_env({config.READ_LOG_BUFFER: "5", config.ENV: "nowhere"})


def test_read_log_buffer_bound_is_named_and_fits_a_frame() -> None:
    with pytest.raises(ConfigError, match=r"'18446744073709551616' must be from 1 to 10000"):
        StackConfig.from_env({config.READ_LOG_BUFFER: str(2**64)})
    most = StackConfig.from_env({config.READ_LOG_BUFFER: "10000"}).read_log_buffer
    assert wire.max_log_frame(most) <= wire.MAX_FRAME


@pytest.mark.parametrize("value", [0, -1, True, "5", 2.0, 10_001, 2**64])
def test_constructor_validates_read_log_buffer(value: object) -> None:
    with pytest.raises(ConfigError, match="read_log_buffer"):
        StackConfig(read_log_buffer=value)  # type: ignore[arg-type]


def test_constructor_validates_env() -> None:
    with pytest.raises(ConfigError, match="env"):
        StackConfig(env="staging")  # type: ignore[arg-type]


def test_empty_log_dir_is_unset() -> None:
    assert StackConfig.from_env({config.LOG_DIR: ""}).log_dir is None


@pytest.mark.parametrize(
    ("buffer", "force", "prefix", "forwarding", "env", "log_dir"),
    list(
        itertools.product(
            [1, 100, 4096],
            [False, True],
            [False, True],
            [False, True],
            config.ENVS,
            [None, "/tmp/x y/ü"],
        )
    ),
)
def test_to_env_from_env_round_trip(
    buffer: int,
    force: bool,
    prefix: bool,
    forwarding: bool,
    env: config.Env,
    log_dir: str | None,
) -> None:
    cfg = StackConfig(buffer, force, prefix, forwarding, env, log_dir)
    environ = cfg.to_env()
    assert all(isinstance(v, str) for v in environ.values())
    assert StackConfig.from_env(environ) == cfg


def test_to_env_omits_unset_log_dir() -> None:
    assert config.LOG_DIR not in StackConfig().to_env()


def test_empty_log_dir_is_rejected_rather_than_lost_in_a_round_trip() -> None:
    with pytest.raises(ConfigError, match="log_dir=''"):
        StackConfig(log_dir="")


def test_non_bool_flags_are_rejected() -> None:
    with pytest.raises(ConfigError, match="force_file_log='no'"):
        StackConfig(force_file_log="no")  # type: ignore[arg-type]


def test_file_log_gate_local_is_off_with_a_reason() -> None:
    reason = StackConfig(env="local").file_log_gate()
    assert reason is not None and config.FORCE_FILE_LOG in reason


def test_file_log_gate_local_forced_is_on() -> None:
    assert StackConfig(env="local", force_file_log=True).file_log_gate() is None


@pytest.mark.parametrize("force", [False, True])
def test_file_log_gate_test_env_is_always_off(force: bool) -> None:
    reason = StackConfig(env="test", force_file_log=force).file_log_gate()
    assert reason is not None and "test" in reason


@pytest.mark.parametrize("force", [False, True])
def test_file_log_gate_prod_is_on(force: bool) -> None:
    assert StackConfig(env="prod", force_file_log=force).file_log_gate() is None


def test_file_log_gate_from_environment() -> None:
    on = {config.ENV: "local", config.FORCE_FILE_LOG: "yes"}
    assert StackConfig.from_env(on).file_log_gate() is None
    assert StackConfig.from_env({config.ENV: "local"}).file_log_gate() is not None


def test_file_log_location_local_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "meshuser")
    directory, basename = StackConfig(env="local").file_log_location()
    assert directory == os.path.join(tempfile.gettempdir(), "meshuser")
    assert basename == "monarch_log"


def test_file_log_location_local_without_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER", raising=False)
    directory, _ = StackConfig(env="local").file_log_location()
    assert directory == os.path.join(tempfile.gettempdir(), str(os.getuid()))


@pytest.mark.parametrize("env", config.ENVS)
def test_file_log_location_honours_log_dir(env: config.Env, tmp_path: os.PathLike[str]) -> None:
    cfg = StackConfig(env=env, force_file_log=True, log_dir=str(tmp_path))
    directory, basename = cfg.file_log_location()
    assert directory == str(tmp_path)
    assert basename  # each environment has its own basename


def test_file_log_location_prod_default() -> None:
    directory, basename = StackConfig(env="prod").file_log_location()
    assert os.path.isabs(directory)
    assert basename and basename != "monarch_log"


def test_file_log_location_log_dir_from_environment(tmp_path: os.PathLike[str]) -> None:
    cfg = StackConfig.from_env(
        {config.ENV: "local", config.FORCE_FILE_LOG: "1", config.LOG_DIR: str(tmp_path)}
    )
    assert cfg.file_log_location() == (str(tmp_path), "monarch_log")
