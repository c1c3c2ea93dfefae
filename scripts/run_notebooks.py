"""``make run``: execute every notebook headlessly and print seconds and peak memory per notebook.

Notebooks are executed in memory (the committed files are not rewritten). The local model
server is shared by all notebooks, as in a learner's session; its memory is shown separately.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nb import execute  # scripts/nb.py

BUDGET_S = {"07": 240}  # seconds; every other lesson: 90 (ARCHITECTURE.md)


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "lessons")
    notebooks = sorted(root.glob("*/*.ipynb"))
    rows, failed = [], []
    for path in notebooks:
        print(f"running {path} ...", flush=True)
        try:
            seconds, peak_mb = execute(path, save=False)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - reported in the table
            seconds, peak_mb, status = float("nan"), float("nan"), f"FAILED: {type(exc).__name__}"
            failed.append(path)
        budget = BUDGET_S.get(path.parent.name[:2], 90)
        rows.append((path.name, seconds, peak_mb, budget, status))

    from shared.llm import server_status

    print(f"\n{'notebook':<44} {'seconds':>8} {'peak MB':>8} {'budget s':>9}  status")
    for name, seconds, peak_mb, budget, status in rows:
        flag = "" if seconds <= budget or status != "ok" else "  (over budget)"
        print(f"{name:<44} {seconds:8.1f} {peak_mb:8.0f} {budget:9d}  {status}{flag}")
    total = sum(r[1] for r in rows if r[4] == "ok")
    print(f"{'total':<44} {total:8.1f}")
    srv = server_status()
    if srv:
        import psutil

        rss = psutil.Process(srv.pid).memory_info().rss / 2**20
        print(f"local server ({srv.engine}, pid {srv.pid}): {rss:.0f} MB resident")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
