"""The house rules (STYLE.md), kept by a test: layout, notebook skeleton, outputs, imports, data."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import nbformat
import pytest

from shared import CROSS_CUTTING, LESSONS

ROOT = Path(__file__).resolve().parent.parent
LESSON_DIRS = sorted(
    p.name for p in (ROOT / "lessons").iterdir() if p.is_dir() and p.name[:2].isdigit()
)
ORDER = {module: i for i, module in enumerate(LESSONS.values())}
MAX_NOTEBOOK_BYTES = 2_500_000
FORBIDDEN = re.compile(r"^\s*(!\s*pip|%pip|%conda|!\s*conda)|sys\.path\.(append|insert)", re.M)


def _notebooks(lesson: str) -> list[Path]:
    return [ROOT / "lessons" / lesson / f"{lesson}{suffix}.ipynb" for suffix in ("", "_solutions")]


def _shared_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "shared":
                found |= {a.name for a in node.names}
            elif node.module.startswith("shared."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("shared.")}
    return found


def _code(nb: nbformat.NotebookNode) -> str:
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines += [
                ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))
            ]
    return "\n".join(lines)


def test_every_lesson_folder_is_mapped() -> None:
    assert set(LESSON_DIRS) <= set(LESSONS), (
        f"unmapped lesson folders: {set(LESSON_DIRS) - set(LESSONS)}"
    )


@pytest.mark.parametrize("lesson", list(LESSONS))
def test_lesson_has_notebooks_module_and_tests(lesson: str) -> None:
    module = LESSONS[lesson]
    for nb in _notebooks(lesson):
        assert nb.is_file(), f"missing {nb.relative_to(ROOT)}"
    assert (ROOT / "shared" / f"{module}.py").is_file(), f"missing shared/{module}.py"
    assert (ROOT / "tests" / f"test_{module}.py").is_file(), f"missing tests/test_{module}.py"


@pytest.mark.parametrize("module", sorted({*LESSONS.values(), *CROSS_CUTTING}))
def test_module_documented_and_forward_only(module: str) -> None:
    path = ROOT / "shared" / f"{module}.py"
    if not path.exists():
        pytest.skip(f"shared/{module}.py not written yet")  # reported by the lesson test above
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc, f"shared/{module}.py needs a module docstring"
    if module in ORDER:
        lesson = next(k for k, v in LESSONS.items() if v == module)
        assert f"Lesson {lesson[:2]}" in doc, (
            f"docstring of shared/{module}.py must name 'Lesson {lesson[:2]}'"
        )
    assert any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
        for n in tree.body
    ), f"shared/{module}.py needs __all__"
    assert len(path.read_text().splitlines()) <= 450, f"shared/{module}.py is too long; split it"
    for used in _shared_imports(tree):
        if used in ORDER:
            assert module in ORDER, f"cross-cutting shared/{module}.py imports lesson module {used}"
            assert ORDER[used] <= ORDER[module], f"shared/{module}.py imports later lesson {used}"


@pytest.mark.parametrize("lesson", LESSON_DIRS)
def test_notebooks_follow_the_skeleton(lesson: str) -> None:
    main, solutions = _notebooks(lesson)
    nb = nbformat.read(main, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "start with a title"
    assert "learning objectives" in first.source.lower(), "the first cell lists learning objectives"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any(h.lstrip().startswith("## Summary") for h in headings), (
        "needs a '## Summary' section"
    )
    assert any(h.lstrip().startswith("## Exercises") for h in headings), "needs '## Exercises'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "NBVAL_IGNORE_OUTPUT" in code[1].source, (
        "2nd code cell: versions/provider, NBVAL_IGNORE_OUTPUT"
    )
    run = 0
    for cell in nb.cells:
        run = run + 1 if cell.cell_type == "code" else 0
        assert run <= 2, f"prose before code: three code cells in a row at {cell.source[:60]!r}"
    sol = nbformat.read(solutions, as_version=4)
    assert sol.cells[0].source.startswith("# "), "solutions notebook starts with a title"
    assert "assert_all_passed" in _code(sol), "solutions end with checks.assert_all_passed()"


@pytest.mark.parametrize("lesson", LESSON_DIRS)
def test_notebooks_are_clean_runs(lesson: str) -> None:
    for path in _notebooks(lesson):
        assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, f"{path.name} is over the size cap"
        nb = nbformat.read(path, as_version=4)
        assert set(nb.metadata) <= {"kernelspec", "language_info"}, (
            f"{path.name}: volatile metadata"
        )
        code = [c for c in nb.cells if c.cell_type == "code"]
        counts = [c.execution_count for c in code]
        assert counts == list(range(1, len(code) + 1)), (
            f"{path.name}: not a clean top-to-bottom run"
        )
        for cell in code:
            assert "execution" not in cell.metadata, f"{path.name}: timing metadata left in"
            assert not FORBIDDEN.search(cell.source), f"{path.name}: no pip/sys.path in notebooks"
            if "NBVAL_CHECK_OUTPUT" in cell.source:
                assert cell.outputs, f"{path.name}: checked cell has no stored output"
            for out in cell.outputs:
                assert out.get("output_type") != "error", f"{path.name}: stored error output"


@pytest.mark.parametrize("lesson", LESSON_DIRS)
def test_notebook_imports_are_forward_only(lesson: str) -> None:
    mine = ORDER[LESSONS[lesson]]
    for path in _notebooks(lesson):
        used = _shared_imports(ast.parse(_code(nbformat.read(path, as_version=4))))
        later = [m for m in used if m in ORDER and ORDER[m] > mine]
        assert not later, f"{path.name} imports later lessons' modules {later}"
        unknown = [m for m in used if m not in ORDER and m not in CROSS_CUTTING]
        assert not unknown, f"{path.name} imports unknown shared modules {unknown}"


def test_data_manifest_matches_files() -> None:
    data = ROOT / "data"
    manifest = json.loads((data / "manifest.json").read_text())["files"]
    readme = (data / "README.md").read_text()
    on_disk = {
        p.relative_to(data).as_posix()
        for p in data.rglob("*")
        if p.is_file() and p.name not in ("README.md", "manifest.json")
    }
    assert on_disk == set(manifest), (
        "data/manifest.json is out of date: run scripts/data_manifest.py"
    )
    for rel, meta in manifest.items():
        blob = (data / rel).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == meta["sha256"], f"{rel} changed: update manifest"
        assert len(blob) == meta["bytes"]
        assert rel in readme, f"data/README.md does not describe {rel}"


def test_readme_lesson_table_is_generated() -> None:
    import subprocess
    import sys

    script = ROOT / "scripts" / "lesson_table.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
