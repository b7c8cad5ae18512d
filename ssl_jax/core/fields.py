"""Rules for config fields: what a field may hold, said in words for the one-line errors.

Each modality's table lives beside it (``vision/fields.py``, ``text/fields.py``); the shared and
per-method tables, and the check that applies them, in ``ssl_jax/config_checks.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field may hold: ``accepts(value)``, and ``allowed`` saying it in words."""

    allowed: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _or_none(rule: Rule, none: str | None, allowed: str | None) -> Rule:
    if none is None:
        return Rule(allowed or rule.allowed, rule.accepts)
    return Rule(
        allowed or f"{rule.allowed}, or None ({none})",
        lambda value: value is None or rule.accepts(value),
    )


def integer(low: int | None = None, *, none: str | None = None, allowed: str | None = None) -> Rule:
    """An int >= ``low``; ``none`` says what None means where None is allowed."""
    words = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}.get(
        low, f"an integer >= {low}"
    )
    rule = Rule(words, lambda value: _is_int(value) and (low is None or value >= low))
    return _or_none(rule, none, allowed)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    none: str | None = None,
    allowed: str | None = None,
) -> Rule:
    """A finite int or float in the interval from ``low`` to ``high``, each end open or closed."""
    if low is not None and high is not None:
        words = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        words = f"{'>' if low_open else '>='} {low:g}"
    else:
        words = "a finite number"

    def accepts(value: Any) -> bool:
        if not _is_number(value):
            return False
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    return _or_none(Rule(words, accepts), none, allowed)


def one_of(choices: Any, *, none: str | None = None) -> Rule:
    choices = tuple(choices)
    words = "one of " + ", ".join(repr(choice) for choice in choices)
    rule = Rule(words, lambda value: isinstance(value, str) and value in choices)
    return _or_none(rule, none, None)


def string(*, none: str | None = None) -> Rule:
    return _or_none(Rule("a string", lambda value: isinstance(value, str) and value), none, None)


BOOL = Rule("True or False", lambda value: isinstance(value, bool))
OPTIONAL_BOOL = _or_none(BOOL, "the backend decides", None)
PROBABILITY = number(0, 1)
FRACTION_OF_ONE = number(0, 1, high_open=True)  # momenta and decay rates: 1 would never move
