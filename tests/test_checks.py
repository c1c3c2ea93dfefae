"""shared.checks: exercise checks print, record, and can fail loudly in solutions."""

from __future__ import annotations

import pytest

from shared import checks


@pytest.fixture(autouse=True)
def _fresh():
    checks.reset()
    yield
    checks.reset()


def test_pass_and_not_yet_lines(capsys) -> None:
    assert checks.check("adds", 1 + 1 == 2)
    assert not checks.check("wrong", False, hint="look again")
    out = capsys.readouterr().out
    assert "✅ adds" in out and "❌ not yet: wrong" in out and "hint: look again" in out


def test_callable_errors_count_as_not_yet(capsys) -> None:
    assert not checks.check("boom", lambda: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_equal_and_close(capsys) -> None:
    assert checks.check_equal("eq", [1, 2], [1, 2])
    assert not checks.check_equal("neq", None, 3)
    assert "got None" in capsys.readouterr().out
    assert checks.check_close("pi", 3.14159, 3.1416, tol=1e-3)
    assert not checks.check_close("text", "abc", 1.0)
    assert not checks.check_close("none", None, 1.0)


def test_assert_all_passed() -> None:
    with pytest.raises(AssertionError, match="only 0 check"):
        checks.assert_all_passed()
    checks.check("ok", True)
    checks.assert_all_passed()
    checks.check("bad", False)
    with pytest.raises(AssertionError, match="1 check\\(s\\) failed: bad"):
        checks.assert_all_passed()
    assert checks.results() == [("ok", True), ("bad", False)]


def test_result_is_truthy_and_silent_in_jupyter(capsys) -> None:
    from IPython.core.formatters import DisplayFormatter

    ok, bad = checks.check("a", True), checks.check("b", False)
    assert ok and not bad and repr(bad) == "CheckResult(passed=False)"
    capsys.readouterr()
    # What Jupyter shows for a cell ending in check(...): nothing (the printed line says it all).
    assert DisplayFormatter().format(ok) == ({}, {})
    assert DisplayFormatter().format(bad) == ({}, {})
    assert capsys.readouterr().out == ""
