"""Auto-checked exercises: ``check(...)`` prints a friendly pass / not-yet line with a hint.

A lesson's exercise cells end with checks; an unsolved exercise prints "not yet" and the hint
(the notebook still runs top to bottom). The solutions notebooks finish with
:func:`assert_all_passed`, so CI fails if a published solution stops passing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "CheckResult",
    "assert_all_passed",
    "check",
    "check_close",
    "check_equal",
    "results",
    "reset",
]

_results: list[tuple[str, bool]] = []


class CheckResult:
    """Truthy when the check passed; shows nothing in Jupyter (the printed line says it all)."""

    __slots__ = ("passed",)

    def __init__(self, passed: bool) -> None:
        self.passed = passed

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed})"

    def _ipython_display_(self) -> None:  # a cell ending in check(...) shows no "False"
        pass


def _record(label: str, passed: bool, hint: str, detail: str = "") -> CheckResult:
    _results.append((label, passed))
    if passed:
        print(f"✅ {label}")
    else:
        extra = f" ({detail})" if detail else ""
        print(f"❌ not yet: {label}{extra}" + (f"\n   hint: {hint}" if hint else ""))
    return CheckResult(passed)


def check(label: str, condition: bool | Callable[[], Any], hint: str = "") -> CheckResult:
    """Record and print whether ``condition`` holds; a callable is called, errors count as fails."""
    detail = ""
    if callable(condition):
        try:
            passed = bool(condition())
        except Exception as exc:  # noqa: BLE001 - any error in learner code is a "not yet"
            passed, detail = False, f"{type(exc).__name__}: {exc}"
    else:
        passed = bool(condition)
    return _record(label, passed, hint, detail)


def check_equal(label: str, actual: Any, expected: Any, hint: str = "") -> CheckResult:
    """Pass when ``actual == expected``; the fail line shows what was found."""
    passed = actual == expected
    return _record(label, passed, hint, "" if passed else f"got {actual!r}")


def check_close(
    label: str, actual: float | None, expected: float, tol: float = 1e-6, hint: str = ""
) -> CheckResult:
    """Pass when ``actual`` is a number within ``tol`` (absolute) of ``expected``."""
    try:
        passed = actual is not None and math.isclose(float(actual), expected, abs_tol=tol)
    except (TypeError, ValueError):
        passed = False
    return _record(label, passed, hint, "" if passed else f"got {actual!r}")


def results() -> list[tuple[str, bool]]:
    """Every ``(label, passed)`` recorded in this kernel, in order."""
    return list(_results)


def reset() -> None:
    """Forget the recorded results."""
    _results.clear()


def assert_all_passed(minimum: int = 1) -> None:
    """Raise ``AssertionError`` unless at least ``minimum`` checks ran and all passed."""
    failed = [label for label, ok in _results if not ok]
    if len(_results) < minimum:
        raise AssertionError(f"only {len(_results)} check(s) ran; expected at least {minimum}")
    if failed:
        raise AssertionError(f"{len(failed)} check(s) failed: {', '.join(failed)}")
    print(f"All {len(_results)} checks passed.")
