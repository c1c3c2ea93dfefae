"""Notebook tools: build a notebook from a percent-format script, execute it in place, clean it.

    python scripts/nb.py new SRC.py OUT.ipynb   # cells from "# %%" / "# %% [markdown]" markers
                                                # ("# %% tags=a,b" tags a code cell)
    python scripts/nb.py run NB.ipynb [...]     # clean top-to-bottom run, outputs saved, cleaned
    python scripts/nb.py clean NB.ipynb [...]   # strip volatile metadata only

A committed notebook is always the result of ``run``: execution counts 1..n, outputs stored,
volatile metadata (timings, widget state, kernel versions) stripped.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import nbformat

KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: nbval directives are cell tags (nbval reads them); learners never see ``# NBVAL_...`` comments.
MARKERS = {
    "# NBVAL_IGNORE_OUTPUT": "nbval-ignore-output",
    "# NBVAL_CHECK_OUTPUT": "nbval-check-output",
    "# NBVAL_SKIP": "nbval-skip",
    "# NBVAL_RAISES_EXCEPTION": "nbval-raises-exception",
}
#: the notebook metadata key where ``run`` records what produced the stored outputs.
RUN_KEY = "course_run"


def from_percent(src: Path) -> nbformat.NotebookNode:
    """Split a ``# %%`` script into cells; ``# %% [markdown]`` cells have their ``# `` removed."""
    nb = nbformat.v4.new_notebook()
    kind, lines, tags = None, [], []

    def flush() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(
                ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in text.splitlines()
            )
            nb.cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and text.strip():
            cell = nbformat.v4.new_code_cell(text)
            if tags:
                cell.metadata["tags"] = tags
            nb.cells.append(cell)

    for line in src.read_text().splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
            # "# %% tags=nbval-check-output,other" puts cell tags on a code cell
            tags = line.split("tags=", 1)[1].split(",") if "tags=" in line else []
        elif kind is not None:
            lines.append(line)
    flush()
    return clean(nb)


def tag_directives(cell: nbformat.NotebookNode) -> None:
    """Turn ``# NBVAL_...`` comment lines into nbval cell tags and drop ``# fmt: skip`` markers."""
    if cell.cell_type != "code":
        return
    tags = list(cell.metadata.get("tags", []))
    kept = []
    for line in cell.source.splitlines():
        marker = line.strip()
        if marker in MARKERS:
            if MARKERS[marker] not in tags:
                tags.append(MARKERS[marker])
            continue
        kept.append(line.replace("  # fmt: skip", "").replace("# fmt: skip", "").rstrip())
    cell.source = "\n".join(kept)
    if tags:
        cell.metadata["tags"] = tags


def run_record() -> dict[str, str]:
    """Provider, engine and model the course is configured with here (what a run is made with)."""
    from shared import config, llm

    s = config.load_settings()
    engine = s.local_engine if s.provider == "local" else "-"
    return {"provider": s.provider, "engine": engine, "model": llm.model_name(s)}


def _merge_streams(outputs: list) -> list:
    """One stdout block instead of one output per ``print(..., flush=True)`` (a streamed reply)."""
    merged: list = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and out.get("output_type") == prev.get("output_type") == "stream"
            and out.get("name") == prev.get("name")
        ):
            prev["text"] = prev["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip volatile metadata and widget views (their text/plain fallback is kept)."""
    record = nb.metadata.get(RUN_KEY)
    nb.metadata = nbformat.NotebookNode(
        kernelspec=KERNEL, language_info={"name": "python", "pygments_lexer": "ipython3"}
    )
    if record:
        nb.metadata[RUN_KEY] = record
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"
        tag_directives(cell)
        for key in ("execution", "ExecuteTime", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        for out in cell.get("outputs", []):
            out.get("metadata", {}).pop("transient", None)
        if cell.cell_type == "code":
            # A widget (a tqdm.auto bar) is stored with a text fallback frozen at its first state,
            # "0%|": drop the whole output; the bar is live when a learner runs the cell.
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
            cell.outputs = [o for o in cell.outputs if o.get("data", True) != {}]
            cell.outputs = _merge_streams(cell.outputs)
    return nb


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def execute(path: Path, timeout: int = 900, save: bool = True) -> tuple[float, float]:
    """Run a notebook top to bottom in its own folder; return (seconds, peak kernel RSS in MB)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            km = getattr(client, "km", None)
            pid = getattr(getattr(km, "provisioner", None), "pid", None) if km else None
            if pid:
                peak[0] = max(peak[0], _tree_rss(pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    if save:
        nb.metadata[RUN_KEY] = run_record()
        nbformat.write(clean(nb), path)
    return seconds, peak[0] / 2**20


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("new", "run", "clean"):
        print(__doc__)
        return 2
    if argv[0] == "new":
        nbformat.write(from_percent(Path(argv[1])), Path(argv[2]))
        return 0
    for name in argv[1:]:
        path = Path(name)
        if argv[0] == "clean":
            nbformat.write(clean(nbformat.read(path, as_version=4)), path)
            continue
        seconds, peak_mb = execute(path)
        print(f"{path}: {seconds:.1f} s, peak kernel memory {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
