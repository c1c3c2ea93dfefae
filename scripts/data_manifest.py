"""Write (or ``--check``) data/manifest.json: size and SHA-256 of every file under data/."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"


def build() -> dict:
    files = {}
    for path in sorted(DATA.rglob("*")):
        if path.is_file() and path.name not in ("README.md", "manifest.json"):
            blob = path.read_bytes()
            files[path.relative_to(DATA).as_posix()] = {
                "bytes": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
    return {"files": files}


def main(argv: list[str]) -> int:
    text = json.dumps(build(), indent=2) + "\n"
    target = DATA / "manifest.json"
    if "--check" in argv:
        ok = target.is_file() and target.read_text() == text
        print("data/manifest.json is up to date" if ok else "data/manifest.json is out of date")
        return 0 if ok else 1
    target.write_text(text)
    print(f"wrote {target} ({len(json.loads(text)['files'])} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
