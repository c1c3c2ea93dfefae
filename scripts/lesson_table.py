"""Regenerate (or ``--check``) the lesson table in README.md from the notebooks themselves.

The title of each lesson is the first heading of its notebook; the module comes from
``shared.LESSONS``. Run after adding or renaming a lesson; the conventions test runs ``--check``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- lessons:start -->", "<!-- lessons:end -->"


def title(notebook: Path) -> str:
    first = json.loads(notebook.read_text())["cells"][0]["source"]
    line = ("".join(first) if isinstance(first, list) else first).splitlines()[0]
    return re.sub(r"^#\s*\d+\s*·\s*", "", line).strip()


def table() -> str:
    sys.path.insert(0, str(ROOT))
    from shared import LESSONS

    rows = [
        "| # | lesson | solutions | helper module |",
        "|---|--------|-----------|---------------|",
    ]
    for lesson, module in LESSONS.items():
        nb = ROOT / "lessons" / lesson / f"{lesson}.ipynb"
        sol = nb.with_name(f"{lesson}_solutions.ipynb")
        name = title(nb) if nb.is_file() else "(in preparation)"
        link = f"[{name}](lessons/{lesson}/{nb.name})" if nb.is_file() else name
        sol_link = f"[solutions](lessons/{lesson}/{sol.name})" if sol.is_file() else ""
        rows.append(f"| {lesson[:2]} | {link} | {sol_link} | `shared.{module}` |")
    return "\n".join(rows)


def render(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    current = path.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print("README.md lesson table is out of date: run python scripts/lesson_table.py")
            return 1
        return 0
    path.write_text(wanted)
    print("README.md lesson table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
