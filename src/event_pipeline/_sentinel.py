"""The ``EMPTY`` sentinel: "not configured, use the default"."""

from __future__ import annotations

import enum
from typing import Final, Literal


class _Empty(enum.Enum):
    # An enum member is a singleton that survives pickling and copying, and lets mypy narrow
    # ``int | Literal[_Empty.EMPTY]`` with ``is EMPTY``.
    EMPTY = "EMPTY"

    def __repr__(self) -> str:
        return "EMPTY"

    def __bool__(self) -> bool:
        return False


EMPTY: Final = _Empty.EMPTY
"""Marks a configuration field as unset: the runner then leaves it to the executor's default."""

EmptyType = Literal[_Empty.EMPTY]
