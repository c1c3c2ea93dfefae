"""Reading and writing the course's files: JSON lines with one validation, and atomic swaps.

* :func:`read_jsonl`: every row of a JSON-lines file, each a JSON object with the keys asked
  for; a bad line raises :class:`DataFileError` naming the file and the line.
* :func:`atomic_path`: build a file or a folder under a temporary name; it replaces the target
  only when the build finished, so a half-written result is never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from shared.config import FriendlyError

__all__ = ["DataFileError", "atomic_path", "read_jsonl"]


class DataFileError(FriendlyError, ValueError):
    """A data file is missing or a line of it is not what the course expects."""


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; blank lines are skipped.

    Every other line must be a JSON object holding the ``required`` keys; otherwise
    :class:`DataFileError` says which file and line, and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file. Is the checkout complete?")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path.name}, line {n}: not JSON ({exc.msg})") from None
        missing = [key for key in required if not isinstance(row, dict) or key not in row]
        if missing:
            raise DataFileError(
                f"{path.name}, line {n}: expected a JSON object with {', '.join(required)}; "
                f"{', '.join(missing)} missing"
            )
        rows.append(row)
    return rows


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; write a file or a folder there.

    When the block ends without an error, the temporary path replaces ``target`` (a file in one
    ``os.replace``; a folder by two renames, the old one removed after); on an error it is
    deleted and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and target.exists():
        old = target.with_name(f"{target.name}.{os.getpid()}.old")
        _remove(old)
        target.rename(old)
        tmp.rename(target)
        _remove(old)
    else:
        os.replace(tmp, target)
