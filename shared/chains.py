"""Lesson 06 (LangChain): the shop database, a SQL guard, chain builders, callbacks, an agent.

* :func:`build_shop_db` builds the shop's SQLite database from the committed CSV files in
  ``data/shop/`` into the course cache, deterministically and only when the CSVs changed;
  :func:`connect_shop_db` opens it read-only;
* :func:`guard_sql` accepts one read-only ``SELECT`` and rejects everything else;
  :func:`run_select` runs it on a read-only connection that also refuses writes;
* :func:`parse_model_json` turns a model's reply into a validated Pydantic object (or raises);
* :class:`UsageRecorder` is a LangChain callback that records tokens and latency per call;
* chain builders for the lesson's four examples, and a small agent whose tool calls use a
  constrained one-line format that even the 135M local model can follow.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import sqlite3
from pathlib import Path

from shared.config import FriendlyError
from shared.paths import cache_dir, data_path

__all__ = [
    "SHOP_SCHEMA",
    "UnsafeSQLError",
    "build_shop_db",
    "connect_shop_db",
    "guard_sql",
    "run_select",
    "shop_db_path",
]

#: the shop's tables; column order matches the CSV files in ``data/shop/``.
SHOP_SCHEMA = """\
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    city TEXT NOT NULL,
    country TEXT NOT NULL,
    joined TEXT NOT NULL,          -- ISO date
    plus_member INTEGER NOT NULL   -- 1 = Maple Plus member
);
CREATE TABLE products (
    product_id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    price REAL NOT NULL,           -- USD
    warranty_months INTEGER NOT NULL,
    bulky INTEGER NOT NULL,        -- 1 = two-person delivery
    stock INTEGER NOT NULL,
    description TEXT NOT NULL
);
CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(customer_id),
    order_date TEXT NOT NULL,      -- ISO date
    status TEXT NOT NULL,          -- processing, shipped, delivered, returned, cancelled
    shipping_method TEXT NOT NULL,
    shipping_fee REAL NOT NULL
);
CREATE TABLE order_items (
    order_id INTEGER NOT NULL REFERENCES orders(order_id),
    product_id INTEGER NOT NULL REFERENCES products(product_id),
    quantity INTEGER NOT NULL,
    unit_price REAL NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
"""
_TABLES = ("customers", "products", "orders", "order_items")


class UnsafeSQLError(FriendlyError):
    """A statement that is not a single read-only SELECT."""


# ---------------------------------------------------------------------------- the shop database
def shop_db_path() -> Path:
    """Where :func:`build_shop_db` writes the database by default (inside the course cache)."""
    return cache_dir("shop") / "shop.db"


def _sources_digest() -> str:
    h = hashlib.sha256(SHOP_SCHEMA.encode())
    for table in _TABLES:
        h.update(data_path("shop", f"{table}.csv").read_bytes())
    return h.hexdigest()


def build_shop_db(path: Path | str | None = None, force: bool = False) -> Path:
    """Build the shop's SQLite database from ``data/shop/*.csv``; return its path.

    Idempotent: if the file exists and was built from the same CSVs and schema it is left alone;
    otherwise it is rebuilt into a temporary file that replaces the old one atomically.
    """
    target = Path(path) if path is not None else shop_db_path()
    digest = _sources_digest()
    if target.is_file() and not force:
        try:
            with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as con:
                row = con.execute("SELECT value FROM build_info WHERE key = 'sources'").fetchone()
            if row and row[0] == digest:
                return target
        except sqlite3.Error:
            pass  # unreadable or foreign file: rebuild it
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.executescript(
            SHOP_SCHEMA + "CREATE TABLE build_info (key TEXT PRIMARY KEY, value TEXT);"
        )
        for table in _TABLES:
            with open(data_path("shop", f"{table}.csv"), newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader)
                marks = ", ".join("?" * len(header))
                con.executemany(
                    f"INSERT INTO {table} ({', '.join(header)}) VALUES ({marks})", reader
                )
        con.execute("INSERT INTO build_info VALUES ('sources', ?)", (digest,))
        con.commit()
    finally:
        con.close()
    os.replace(tmp, target)
    return target


_READ_ONLY_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}


def _authorizer(action: int, *args: object) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ONLY_ACTIONS else sqlite3.SQLITE_DENY


def connect_shop_db(path: Path | str | None = None) -> sqlite3.Connection:
    """A read-only connection to the shop database (built first if needed).

    Two locks: the file is opened with ``mode=ro``, and an authorizer denies any action other
    than reading, so even a statement that slipped past :func:`guard_sql` cannot write.
    """
    target = Path(path) if path is not None else build_shop_db()
    if not target.is_file():
        raise FileNotFoundError(f"No database at {target}; call build_shop_db() first.")
    con = sqlite3.connect(f"file:{target}?mode=ro", uri=True, check_same_thread=False)
    con.set_authorizer(_authorizer)
    return con


# ---------------------------------------------------------------------------- SQL guard
_FORBIDDEN = re.compile(
    r"\b(insert|update|delete|drop|alter|create|replace|attach|detach|pragma|vacuum|reindex|"
    r"analyze|begin|commit|rollback|savepoint|release|truncate|grant|load_extension)\b",
    re.IGNORECASE,
)


def _strip_literals(sql: str) -> str:
    """The statement with string literals and comments blanked (so 'drop' in a name is fine)."""
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)
    sql = re.sub(r"--[^\n]*", " ", sql)
    return re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)


def guard_sql(sql: str) -> str:
    """Return ``sql`` cleaned (fences and trailing ``;`` removed) if it is one read-only SELECT.

    Raises :class:`UnsafeSQLError` for anything else: empty input, several statements,
    statements that do not start with ``SELECT``/``WITH``, or any writing keyword.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise UnsafeSQLError("No SQL statement was given: expected one SELECT query.")
    text = re.sub(r"^```(?:sql)?\s*|\s*```$", "", sql.strip(), flags=re.IGNORECASE).strip()
    text = text.rstrip().rstrip(";").strip()
    bare = _strip_literals(text)
    if ";" in bare:
        raise UnsafeSQLError(
            "Only one statement is allowed, but this SQL contains several (a ';' separates "
            f"them): {text[:120]!r}. Ask for a single SELECT query."
        )
    first = bare.split(None, 1)[0].lower() if bare.split() else ""
    if first not in ("select", "with"):
        raise UnsafeSQLError(
            f"Only read-only SELECT queries may run, but this statement starts with "
            f"{first.upper()!r}: {text[:120]!r}."
        )
    bad = _FORBIDDEN.search(bare)
    if bad:
        raise UnsafeSQLError(
            f"The query contains the writing keyword {bad.group(0).upper()!r}; only read-only "
            f"SELECT queries may run: {text[:120]!r}."
        )
    return text


def run_select(
    sql: str, con: sqlite3.Connection | None = None, max_rows: int = 50
) -> tuple[list[str], list[tuple]]:
    """Guard ``sql``, run it read-only, return ``(column names, rows)`` (at most ``max_rows``)."""
    query = guard_sql(sql)
    own = con is None
    con = con or connect_shop_db()
    try:
        cur = con.execute(query)
        columns = [d[0] for d in cur.description or []]
        return columns, cur.fetchmany(max_rows)
    finally:
        if own:
            con.close()
