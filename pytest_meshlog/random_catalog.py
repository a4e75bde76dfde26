"""Randomised catalog scenarios (`--meshlog-random N`): items `meshlog/random[0..N-1]`.

Item i runs one `mesh_plans()` example, drawn by Hypothesis with a seed derived from the
session seed (`--meshlog-seed`, else `DEFAULT_SEED`) and i, so a run replays exactly. A
failure shrinks (within `SHRINK_BUDGET_S` of mesh runs) and prints the smallest failing
plan as a paste-ready pytest test (`to_python`).
"""

from __future__ import annotations

import time
from functools import cache

import pytest
from hypothesis import HealthCheck, Phase, assume, find, given, seed
from hypothesis import settings as hsettings

from fake_procs import derive_seed

from .harness import MeshHarness
from .strategies import MeshPlan, mesh_plans, run_plan

DEFAULT_SEED = 20_261_126
SHRINK_BUDGET_S = 90.0
"""After this long since the first failure, only plans that already failed run again:
shrinking stops at the smallest failure found so far."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from .settings import SETTINGS

    count = metafunc.config.stash[SETTINGS].random
    metafunc.parametrize("random_index", range(count), ids=str)


@cache
def _simplest() -> MeshPlan:
    """The strategy's minimal example, which Hypothesis always tries first."""
    return find(mesh_plans(), lambda _: True, settings=hsettings(database=None))


def test_random(meshlog: MeshHarness, random_index: int, request: pytest.FixtureRequest) -> None:
    """A generated mesh (scripts, hosts, env, files, aggregation, batch size) tears down
    clean: nothing lost beyond what the oracle's rules allow, every barrier completes."""
    from .settings import SETTINGS

    session_seed = request.config.stash[SETTINGS].seed
    if session_seed is None:
        session_seed = DEFAULT_SEED
    derived = derive_seed(session_seed, "random", random_index)
    failed: list[MeshPlan] = []
    first_failure: list[float] = []

    @hsettings(
        max_examples=1,
        database=None,
        deadline=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @seed(derived)
    @given(plan=mesh_plans())
    def scenario(plan: MeshPlan) -> None:
        # With max_examples=1 the only example would be the minimal one: reject it, so
        # Hypothesis draws a random plan from the seed (shrinking still works as usual).
        assume(plan != _simplest())
        over_budget = first_failure and time.monotonic() - first_failure[0] > SHRINK_BUDGET_S
        if over_budget and plan not in failed:
            return  # out of shrinking budget: keep the smallest failure found so far
        try:
            run_plan(meshlog, plan, seed=session_seed).assert_clean()  # failures name it
        except BaseException:
            if not first_failure:
                first_failure.append(time.monotonic())
            failed.append(plan)
            raise

    scenario()
