"""Broken variants of the reference stack (stub, filled in below)."""

from __future__ import annotations

from typing import Any

VARIANTS: dict[str, str] = {}


def apply_to_driver(variant: str, client: Any) -> None:
    """Patch one driver-side LoggingMeshClient instance."""


def apply_in_process(role: str) -> None:
    """Patch this host or child process's classes, per MESHLOG_STACK_VARIANT."""
