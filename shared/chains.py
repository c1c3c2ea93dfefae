"""Lesson 06 (LangChain): the shop database, least-privilege SQL, callbacks, an agent's tool.

:func:`build_shop_db` builds the shop's SQLite database from ``data/shop/*.csv`` into the course
cache (rebuilt only when the CSVs change); :func:`connect_shop_db` opens it read-only and
:func:`connect_customer_db` with least privilege for model-written SQL (one customer's rows
through views, an allow-list authorizer, a time limit); :func:`guard_sql` admits one SELECT.
:func:`run_agent` is the guarded router, the small-model fallback for an agent (the lesson
writes the callback, the structured output and the real agent itself). The :class:`Person`
schema of the extraction examples and the exercise checks are here too; the lesson's data files
are read with :func:`shared.io.read_jsonl`.
"""

from __future__ import annotations

import csv
import hashlib
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field

from shared.checks import CheckResult, check
from shared.config import FriendlyError
from shared.io import atomic_path
from shared.paths import cache_dir, data_path

__all__ = [
    "CUSTOMER_VIEWS",
    "PUBLIC_COLUMNS",
    "ROUTER_EXAMPLES",
    "SHOP_SCHEMA",
    "SQL_EXAMPLES",
    "SQL_TABLES",
    "Person",
    "UnsafeSQLError",
    "build_shop_db",
    "check_blocked_exercise",
    "check_callback_exercise",
    "check_lcel_exercise",
    "connect_customer_db",
    "connect_shop_db",
    "extract_sql",
    "guard_sql",
    "lookup_order",
    "parse_tool_call",
    "router_prompt",
    "run_agent",
    "run_select",
    "same_result",
    "sql_prompt",
]

#: the shop's tables; column order matches the CSV files in ``data/shop/``.
SHOP_SCHEMA = """\
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE, city TEXT NOT NULL, country TEXT NOT NULL,
    joined TEXT NOT NULL, plus_member INTEGER NOT NULL);  -- dates ISO, flags 0/1
CREATE TABLE products (product_id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL, category TEXT NOT NULL, price REAL NOT NULL,  -- USD
    warranty_months INTEGER NOT NULL, bulky INTEGER NOT NULL, stock INTEGER NOT NULL,
    description TEXT NOT NULL);
CREATE TABLE orders (order_id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(customer_id),
    order_date TEXT NOT NULL, status TEXT NOT NULL, shipping_method TEXT NOT NULL,
    shipping_fee REAL NOT NULL);  -- status: processing, shipped, delivered, returned, cancelled
CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders(order_id),
    product_id INTEGER NOT NULL REFERENCES products(product_id),
    quantity INTEGER NOT NULL, unit_price REAL NOT NULL, PRIMARY KEY (order_id, product_id));
"""
_TABLES = ("customers", "products", "orders", "order_items")


class UnsafeSQLError(FriendlyError):
    """A statement that is not a single read-only SELECT."""


# ---------------------------------------------------------------------------- the shop database
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
    target = Path(path) if path is not None else cache_dir("shop") / "shop.db"
    digest = _sources_digest()
    if target.is_file() and not force:
        try:
            with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as con:
                row = con.execute("SELECT value FROM build_info WHERE key = 'sources'").fetchone()
            if row and row[0] == digest:
                return target
        except sqlite3.Error:
            pass  # unreadable or foreign file: rebuild it
    with atomic_path(target) as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(
                f"{SHOP_SCHEMA}CREATE TABLE build_info (key TEXT PRIMARY KEY, value TEXT);"
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


#: what a signed-in customer's SQL may read: views over their own rows (``{cid}``) ...
CUSTOMER_VIEWS = {
    "my_orders": (
        "SELECT order_id, order_date, status, shipping_method, shipping_fee FROM orders "
        "WHERE customer_id = {cid}"
    ),
    "my_order_items": (
        "SELECT order_id, product_id, quantity, unit_price FROM order_items "
        "WHERE order_id IN (SELECT order_id FROM orders WHERE customer_id = {cid})"
    ),
}
#: ... and these columns of the public catalogue ('' is a table read with no column: COUNT(*)).
_CATALOGUE = "product_id sku name category price stock warranty_months description"
PUBLIC_COLUMNS = {"products": {"", *_CATALOGUE.split()}}


class _TimedConnection(sqlite3.Connection):
    """A connection whose every ``execute`` starts a clock; the progress handler checks it."""

    time_limit_s = 2.0
    deadline = float("inf")

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:  # type: ignore[override]
        self.deadline = time.monotonic() + self.time_limit_s
        return super().execute(*args, **kwargs)


def connect_customer_db(
    customer_id: int, path: Path | str | None = None, time_limit_s: float = 2.0
) -> sqlite3.Connection:
    """Least privilege for model-written SQL: a read-only file; the customer's rows only through
    temporary views (:data:`CUSTOMER_VIEWS`); an authorizer allowing those and
    :data:`PUBLIC_COLUMNS`, nothing else; statements stopped after ``time_limit_s``."""
    target = Path(path) if path is not None else build_shop_db()
    con = sqlite3.connect(
        f"file:{target}?mode=ro", uri=True, check_same_thread=False, factory=_TimedConnection
    )
    for view, sql in CUSTOMER_VIEWS.items():
        con.execute(f"CREATE TEMP VIEW {view} AS " + sql.format(cid=int(customer_id)))

    def authorize(
        action: int, table: str | None, column: str | None, db: str | None, view: str | None
    ) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and (
            view in CUSTOMER_VIEWS  # a base-table column read on behalf of the customer's view
            or (db == "temp" and table in CUSTOMER_VIEWS)
            or db is None  # a subquery or CTE whose own reads were checked
            or column in PUBLIC_COLUMNS.get(table or "", ())
        ):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    con.set_authorizer(authorize)
    con.time_limit_s = time_limit_s  # type: ignore[attr-defined]
    con.set_progress_handler(lambda: int(time.monotonic() > con.deadline), 10_000)  # type: ignore[attr-defined]
    return con


def same_result(rows: list[tuple], gold: list[tuple]) -> bool:
    """Execution match: the same rows in any order, numbers compared to 2 decimals."""

    def norm(rs: list[tuple]) -> list[str]:
        return sorted(repr([round(v, 2) if isinstance(v, float) else v for v in r]) for r in rs)

    return norm(rows) == norm(gold)


# ---------------------------------------------------------------------------- SQL guard
_FORBIDDEN = re.compile(
    r"\b(insert|update|delete|drop|alter|create|replace|attach|detach|pragma|vacuum|reindex|"
    r"analyze|begin|commit|rollback|savepoint|release|truncate|grant|load_extension)\b",
    re.IGNORECASE,
)


def _strip_literals(sql: str) -> str:
    """The statement with string literals and comments blanked (so 'drop' in a name is fine)."""
    return re.sub(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", "''", sql, flags=re.S)


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
    first = bare.split(None, 1)[0].lower() if bare.split() else ""
    problem = ""
    if ";" in bare:
        problem = "it contains several statements (separated by ';')"
    elif first not in ("select", "with"):
        problem = f"it starts with {first.upper()!r}, not SELECT"
    elif bad := _FORBIDDEN.search(bare):
        problem = f"it contains the writing keyword {bad.group(0).upper()!r}"
    if problem:
        raise UnsafeSQLError(
            f"Only one read-only SELECT query may run; this SQL is refused "
            f"because {problem}: {text[:120]!r}."
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


def extract_sql(text: str) -> str:
    """The first statement of the SQL in a model's reply (a fenced block, or from SELECT/WITH)."""
    fenced = re.search(r"```(?:sql)?\s*(.*?)```", text, flags=re.S | re.I)
    body = fenced.group(1) if fenced else text
    start = re.search(r"\b(select|with)\b", body, flags=re.I)
    if not start:
        raise UnsafeSQLError(f"The model's reply contains no SELECT query: {text[:120]!r}")
    return body[start.start() :].split(";")[0].strip()


# ---------------------------------------------------------------------------- extraction
class Person(BaseModel):
    """One person extracted from text (lesson 06, example 3)."""

    name: str = Field(min_length=1)
    age: int | None = Field(default=None, ge=0, le=130, description="age in years, this year")
    height_cm: float | None = Field(default=None, gt=30, lt=260)


# ---------------------------------------------------------------------------- chain builders
#: a compact schema for prompts: what :func:`connect_customer_db` lets the model read.
SQL_TABLES = (
    "my_orders(order_id, order_date, status, shipping_method, shipping_fee)  -- my orders only\n"
    "my_order_items(order_id, product_id, quantity, unit_price)\n"
    "products(product_id, name, category, price, stock, warranty_months)"
)
SQL_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Which of my orders used express shipping?",
        "SELECT order_id FROM my_orders WHERE shipping_method = 'express';",
    ),
    ("Which products cost less than 20 dollars?", "SELECT name FROM products WHERE price < 20;"),
    (
        "How many units of product 7 did I buy in total?",
        "SELECT SUM(quantity) FROM my_order_items WHERE product_id = 7;",
    ),
    ("What is the total stock of all products?", "SELECT SUM(stock) FROM products;"),
)


def sql_prompt(examples: tuple[tuple[str, str], ...] = SQL_EXAMPLES) -> ChatPromptTemplate:
    """Few-shot text-to-SQL prompt: the schema, worked examples as chat turns, the question."""
    system = "Translate the customer's question into one SQLite query.\nTables:\n" + SQL_TABLES
    messages: list[tuple[str, str]] = [("system", system)]
    for question, sql in examples:
        messages += [("human", question.replace("{", "{{").replace("}", "}}")), ("ai", sql)]
    return ChatPromptTemplate.from_messages([*messages, ("human", "{question}")])


# ---------------------------------------------------------------------------- agent
def lookup_order(order_id: int, con: sqlite3.Connection | None = None) -> str:
    """Status, date, shipping and items of one order, as one line of text (the agent's tool)."""
    sql = (
        "SELECT o.order_id, o.status, o.order_date, o.shipping_method, "
        "GROUP_CONCAT(i.quantity || ' x ' || p.name, ', ') "
        "FROM orders o JOIN order_items i USING (order_id) JOIN products p USING (product_id) "
        f"WHERE o.order_id = {int(order_id)} GROUP BY o.order_id"
    )
    _, rows = run_select(sql, con)
    if not rows:
        return f"There is no order {int(order_id)}."
    oid, status, date, method, items = rows[0]
    return f"Order {oid} is {status} (ordered {date}, {method} shipping): {items}."


ROUTER_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Has my order 1017 shipped yet?", "lookup_order(1017)"),
    ("Do you ship to Canada?", "none"),
    ("What's happening with order 1003?", "lookup_order(1003)"),
    ("How do I reset my password?", "none"),
)
_CALL = re.compile(r"lookup_order\(\s*#?(\d{3,6})\s*\)")


def router_prompt() -> ChatPromptTemplate:
    """Few-shot prompt asking for exactly ``lookup_order(<number>)`` or ``none``."""
    system = (
        "You route customer messages. If the message asks about a specific order, "
        "reply lookup_order(<order number>). Otherwise reply none."
    )
    messages: list[tuple[str, str]] = [("system", system)]
    for question, reply in ROUTER_EXAMPLES:
        messages += [("human", question), ("ai", reply)]
    return ChatPromptTemplate.from_messages([*messages, ("human", "{message}")])


def parse_tool_call(reply: str, message: str) -> int | None:
    """The order id of a valid ``lookup_order(N)`` call in ``reply``, or None. Guarded: N must
    appear in the customer's own message (a number copied from an example is rejected)."""
    match = _CALL.search(reply)
    if not match:
        return None
    order_id = int(match.group(1))
    return order_id if str(order_id) in re.findall(r"\d+", message) else None


def run_agent(
    message: str, llm: Any, con: sqlite3.Connection | None = None, config: dict | None = None
) -> dict[str, Any]:
    """The guarded router (the small-model fallback for an agent): route, call the tool if the
    call is valid; trace ``{"message", "model_reply", "tool_call", "observation", "answer"}``,
    answer None without a valid call (the caller decides: RAG, hand-off...)."""
    reply = (router_prompt() | llm | StrOutputParser()).invoke({"message": message}, config)
    order_id = parse_tool_call(reply, message)
    trace: dict[str, Any] = {
        "message": message,
        "model_reply": reply.strip(),
        "tool_call": None,
        "observation": None,
        "answer": None,
    }
    if order_id is not None:
        trace["tool_call"] = f"lookup_order({order_id})"
        trace["observation"] = trace["answer"] = lookup_order(order_id, con)
    return trace


# ---------------------------------------------------------------------------- exercises (lesson 06)
def check_lcel_exercise(build: Callable[[Any], Runnable], hint: str = "") -> CheckResult:
    """Exercise 2: ``build(model)`` maps ``{"item"}`` to ``{"item", "answer"}`` (reply stripped)."""
    from langchain_core.language_models import FakeListChatModel

    seen: list[str] = []

    class Capture(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: dict, messages: list, **kw: Any) -> None:
            seen.extend(m.content for m in messages[0])

    def passed() -> bool:
        chain = build(FakeListChatModel(responses=["  Yes, within 30 days. "]))
        out = chain.invoke({"item": "a kettle"}, config={"callbacks": [Capture()]})
        want = {"item": "a kettle", "answer": "Yes, within 30 days."}
        return out == want and "Can I return a kettle?" in seen

    return check("prompt | model | parser, with the input passed through", passed, hint)


def check_blocked_exercise(emails_blocked: Callable[[Any], bool], hint: str = "") -> CheckResult:
    """Exercise 3: True on a least-privilege connection, False on a plain read-only one."""

    def passed() -> bool:
        scoped, plain = connect_customer_db(17), connect_shop_db()
        return emails_blocked(scoped) is True and emails_blocked(plain) is False

    return check("emails_blocked tells the two connections apart", passed, hint)


def check_callback_exercise(handler_cls: type, hint: str = "") -> CheckResult:
    """Exercise 4: a callback that sums total tokens per ``metadata["chain"]``."""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    def passed() -> bool:
        usage = [("a", 10, 2), ("b", 20, 5), ("c", 1, 1)]  # (reply, input, output tokens)
        replies = [
            AIMessage(
                t, usage_metadata={"input_tokens": i, "output_tokens": o, "total_tokens": i + o}
            )
            for t, i, o in usage
        ]
        chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | GenericFakeChatModel(
            messages=iter(replies)
        )
        handler = handler_cls()
        for name in ("greet", "sql", "greet"):
            chain.invoke({"q": "hi"}, config={"callbacks": [handler], "metadata": {"chain": name}})
        return dict(handler.tokens) == {"greet": 14, "sql": 25}

    return check("tokens counted per chain", passed, hint)
