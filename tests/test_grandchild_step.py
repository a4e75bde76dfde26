"""The fake_procs `grandchild` step: validated at build time, plain data, and a real
grandchild process that holds the stream (the catalog's grandchild_holds_stdout runs it
through the stack)."""

from __future__ import annotations

import pytest

from fake_procs import Script, ScriptError, script


def test_grandchild_step_round_trips_as_data() -> None:
    s = script().line().grandchild(stream="both", seconds=5).partial()
    assert Script.from_dict(s.to_dict()) == s
    assert s.to_dict()["steps"][1] == {"op": "grandchild", "stream": "both", "seconds": 5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stream": "stdin"}, "step 0 (grandchild): stream='stdin' must be one of"),
        ({"seconds": 0}, "step 0 (grandchild): seconds=0 must be finite and > 0"),
        ({"seconds": float("inf")}, "step 0 (grandchild): seconds=inf must be finite"),
    ],
)
def test_a_bad_grandchild_step_is_a_build_time_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ScriptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        script().grandchild(**kwargs)
