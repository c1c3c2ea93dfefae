"""Report files written under the home directory since a marker file (``make test`` runs this).

The course keeps every cache in GENAI_CACHE_DIR; anything listed here escaped it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SKIP = {".bash_history", ".python_history", ".lesshst", ".viminfo"}


def new_files(home: Path, marker: Path, exclude: list[Path]) -> list[Path]:
    since = marker.stat().st_mtime
    found = []
    for root, dirs, files in os.walk(home):
        here = Path(root)
        dirs[:] = [d for d in dirs if not any((here / d).resolve() == e for e in exclude)]
        for name in files:
            path = here / name
            try:
                if name not in SKIP and path.lstat().st_mtime > since:
                    found.append(path)
            except OSError:
                continue
    return found


def main() -> int:
    marker = Path(sys.argv[1])
    home = Path.home().resolve()
    repo = Path(__file__).resolve().parent.parent
    exclude = [repo, Path(os.environ.get("GENAI_CACHE_DIR", repo / ".cache")).resolve()]
    found = new_files(home, marker, exclude)
    if found:
        print(f"home check: {len(found)} file(s) written under {home} during the run:")
        for path in found[:20]:
            print(f"  {path}")
    else:
        print(f"home check: nothing written under {home} during the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
