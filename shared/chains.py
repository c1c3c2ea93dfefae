"""Lesson 06 (LangChain): the shop database, a SQL guard, chain builders, callbacks, an agent.

:func:`build_shop_db` builds the shop's SQLite database from ``data/shop/*.csv`` into the course
cache (deterministic, rebuilt only when the CSVs change); :func:`connect_shop_db` opens it
read-only; :func:`guard_sql` admits one read-only SELECT. :func:`parse_model_json` validates a
model's JSON with Pydantic; :class:`UsageRecorder` records tokens and latency per call; the
chain builders and the agent (a constrained one-line tool format the 135M model can follow)
are the lesson's four examples.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough
from pydantic import BaseModel, Field, ValidationError

from shared.config import FriendlyError
from shared.paths import cache_dir, data_path

# fmt: off
__all__ = [
    "RAG_PROMPT", "ROUTER_EXAMPLES", "SHOP_SCHEMA", "SQL_EXAMPLES", "SQL_TABLES",
    "ModelOutputError", "Person", "UnsafeSQLError", "UsageRecorder", "build_shop_db",
    "connect_shop_db", "extract_sql", "format_docs", "guard_sql", "lookup_order",
    "parse_model_json", "parse_tool_call", "rag_chain", "router_prompt", "run_agent", "run_select",
    "sql_chain", "sql_prompt",
]
# fmt: on

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
M = TypeVar("M", bound=BaseModel)


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
        raise UnsafeSQLError(f"Only one read-only SELECT query may run; this SQL is refused "
                             f"because {problem}: {text[:120]!r}.")  # fmt: skip
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


# ---------------------------------------------------------------------------- JSON extraction
class ModelOutputError(ValueError):
    """A model's reply could not be parsed or validated into the expected structure."""


class Person(BaseModel):
    """One person extracted from text (lesson 06, example 3)."""

    name: str = Field(min_length=1)
    age: int | None = Field(default=None, ge=0, le=130, description="age in years, this year")
    height_cm: float | None = Field(default=None, gt=30, lt=260)


def parse_model_json(text: str, schema: type[M]) -> M:
    """The first JSON object in ``text`` validated against ``schema`` (a Pydantic model).

    Tolerates chatter and code fences around the JSON; raises :class:`ModelOutputError` (with
    what was wrong) when there is no complete JSON object or it does not fit the schema.
    """
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        try:
            return schema.model_validate(obj)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ModelOutputError(f"JSON does not fit {schema.__name__}: {problems}") from None
    raise ModelOutputError(f"No complete JSON object in the model's reply: {text[:120]!r}")


# ---------------------------------------------------------------------------- callbacks
_USAGE_COLUMNS = ("call", "model", "prompt_tokens", "completion_tokens", "total_tokens",
                  "latency_s", "error")  # fmt: skip


class UsageRecorder(BaseCallbackHandler):
    """A callback that records, per model call: model, prompt/completion tokens and latency.

    Attach it with ``chain.invoke(x, config={"callbacks": [recorder]})``; read
    :attr:`calls`, :meth:`table` or :meth:`totals`. Tokens come from the provider's usage
    report (``usage_metadata``); a provider that reports none is recorded as 0 tokens.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._start: dict[UUID, float] = {}

    def on_chat_model_start(
        self, serialized: dict, messages: list, *, run_id: UUID, **kw: Any
    ) -> None:
        self._start[run_id] = time.perf_counter()

    def on_llm_start(
        self, serialized: dict, prompts: list[str], *, run_id: UUID, **kw: Any
    ) -> None:
        self._start[run_id] = time.perf_counter()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kw: Any) -> None:
        prompt = completion = 0
        for gens in response.generations:
            for gen in gens:
                usage = getattr(getattr(gen, "message", None), "usage_metadata", None) or {}
                prompt += usage.get("input_tokens", 0)
                completion += usage.get("output_tokens", 0)
        if not prompt and not completion:  # older providers put it in llm_output
            usage = (response.llm_output or {}).get("token_usage") or {}
            prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        self._record(run_id, (response.llm_output or {}).get("model_name", ""), prompt, completion)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._record(run_id, "", 0, 0, error=type(error).__name__)

    def _record(self, run_id: UUID, model: str, prompt: int, completion: int,
                error: str = "") -> None:  # fmt: skip
        started = self._start.pop(run_id, None)
        latency = time.perf_counter() - started if started is not None else float("nan")
        total = prompt + completion
        values = (len(self.calls) + 1, model, prompt, completion, total, latency, error)
        self.calls.append(dict(zip(_USAGE_COLUMNS, values, strict=True)))

    def totals(self) -> dict[str, float]:
        """Calls, tokens and seconds summed over every recorded call."""
        return {
            "calls": len(self.calls),
            **{k: sum(c[k] for c in self.calls) for k in _USAGE_COLUMNS[2:6]},
        }

    def table(self) -> Any:
        """The calls as a pandas DataFrame (one row per model call)."""
        import pandas as pd

        return pd.DataFrame(self.calls, columns=list(_USAGE_COLUMNS))


# ---------------------------------------------------------------------------- chain builders
def format_docs(docs: list[Any]) -> str:
    """Retrieved LangChain documents as prompt text, each tagged with its page id."""
    return "\n\n".join(f"[{d.metadata.get('doc_id', '?')}] {d.page_content}" for d in docs)


RAG_PROMPT = ChatPromptTemplate.from_messages([
    ("system", "You are the customer-service assistant of the shop Maple & Mill. Answer in one "
               "or two sentences using only the context. If the context does not answer the "
               "question, say you don't know."),
    ("human", "Context:\n{context}\n\nQuestion: {question}"),
])  # fmt: skip


def rag_chain(retriever: Any, llm: Any, prompt: ChatPromptTemplate = RAG_PROMPT) -> Runnable:
    """question -> ``{"answer", "sources", "question"}``; sources are the retrieved page ids.

    The citation comes from the retriever, not from the model, so it is always a real page.
    """
    retrieve = RunnableParallel({"docs": retriever, "question": RunnablePassthrough()})
    answer = (
        RunnableLambda(lambda x: {"context": format_docs(x["docs"]), "question": x["question"]})
        | prompt | llm | StrOutputParser()
    )  # fmt: skip
    cite = RunnableLambda(lambda x: {
        "question": x["question"], "answer": x["answer"].strip(),
        "sources": list(dict.fromkeys(d.metadata.get("doc_id", "?") for d in x["docs"])),
    })  # fmt: skip
    return retrieve.assign(answer=answer) | cite


#: a compact schema for prompts (small models do better with short prompts than with DDL).
SQL_TABLES = (
    "orders(order_id, customer_id, order_date, status, shipping_method, shipping_fee)\n"
    "customers(customer_id, name, email, city, country, plus_member)\n"
    "products(product_id, name, category, price, stock, warranty_months)\n"
    "order_items(order_id, product_id, quantity, unit_price)"
)
SQL_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("How many orders have the status 'cancelled'?",
     "SELECT COUNT(*) FROM orders WHERE status = 'cancelled';"),
    ("What is the order date of order 1017?",
     "SELECT order_date FROM orders WHERE order_id = 1017;"),
    ("Which products cost more than 100 dollars?", "SELECT name FROM products WHERE price > 100;"),
    ("How many customers live in Berlin?", "SELECT COUNT(*) FROM customers WHERE city = 'Berlin';"),
)  # fmt: skip


def sql_prompt(examples: tuple[tuple[str, str], ...] = SQL_EXAMPLES) -> ChatPromptTemplate:
    """Few-shot text-to-SQL prompt: the schema, worked examples as chat turns, the question."""
    messages: list[tuple[str, str]] = [
        ("system", "Translate the question into one SQLite query.\nTables:\n" + SQL_TABLES)
    ]
    for question, sql in examples:
        messages += [("human", question.replace("{", "{{").replace("}", "}}")), ("ai", sql)]
    return ChatPromptTemplate.from_messages([*messages, ("human", "{question}")])


def sql_chain(llm: Any, con: sqlite3.Connection | None = None, max_rows: int = 20) -> Runnable:
    """question -> ``{"question", "sql", "columns", "rows", "error"}``: generate, guard, run.

    The generated SQL is always returned so it can be shown; a query that is unsafe or fails
    in SQLite comes back with ``error`` set instead of raising.
    """
    generate = sql_prompt() | llm | StrOutputParser()

    def execute(x: dict) -> dict:
        out = {
            "question": x["question"],
            "sql": x["raw"].strip(),
            "columns": [],
            "rows": [],
            "error": "",
        }
        try:
            out["sql"] = guard_sql(extract_sql(x["raw"]))
            out["columns"], out["rows"] = run_select(out["sql"], con, max_rows=max_rows)
        except (UnsafeSQLError, sqlite3.Error) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        return out

    return RunnableParallel({"question": RunnablePassthrough(), "raw": generate}) | RunnableLambda(
        execute
    )


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
    messages: list[tuple[str, str]] = [
        ("system", "You route customer messages. If the message asks about a specific order, "
                   "reply lookup_order(<order number>). Otherwise reply none.")
    ]  # fmt: skip
    for question, reply in ROUTER_EXAMPLES:
        messages += [("human", question), ("ai", reply)]
    return ChatPromptTemplate.from_messages([*messages, ("human", "{message}")])


def parse_tool_call(reply: str, message: str) -> int | None:
    """The order id of a valid ``lookup_order(N)`` call in ``reply``, or None.

    Guarded: the call must follow the format, and N must appear in the customer's own message;
    a number the model made up (e.g. copied from an example) is rejected.
    """
    match = _CALL.search(reply)
    if not match:
        return None
    order_id = int(match.group(1))
    return order_id if str(order_id) in re.findall(r"\d+", message) else None


def run_agent(message: str, llm: Any, con: sqlite3.Connection | None = None) -> dict[str, Any]:
    """One agent turn: route (model), call the tool if the guarded call is valid, answer.

    Returns the trace: ``{"message", "model_reply", "tool_call", "observation", "answer"}``.
    Without a valid tool call the answer is ``None``: the caller decides (RAG, hand-off...).
    """
    reply = (router_prompt() | llm | StrOutputParser()).invoke({"message": message})
    order_id = parse_tool_call(reply, message)
    trace: dict[str, Any] = {"message": message, "model_reply": reply.strip(), "tool_call": None,
                             "observation": None, "answer": None}  # fmt: skip
    if order_id is not None:
        trace["tool_call"] = f"lookup_order({order_id})"
        trace["observation"] = trace["answer"] = lookup_order(order_id, con)
    return trace
