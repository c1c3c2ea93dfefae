"""``benchmarks/bench_router.py`` without lesson 07's adapter: a clear message and status 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from shared import finetune

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_router.py"


def test_missing_adapter_says_run_lesson_07(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_router", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(finetune, "adapter_dir", lambda: tmp_path / "no-adapter")
    assert bench.main([]) == 2
    err = capsys.readouterr().err
    assert "lesson 07" in err and "no-adapter" in err
