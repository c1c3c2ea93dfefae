"""Tests for shared.chains: shop database, SQL guard, JSON validation, callback, chains, agent."""

from __future__ import annotations

import sqlite3

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda

from shared import chains
from shared.io import read_jsonl
from shared.paths import data_path


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return chains.build_shop_db(tmp_path_factory.mktemp("shop") / "shop.db")


@pytest.fixture()
def con(db):
    c = chains.connect_shop_db(db)
    yield c
    c.close()


def test_shop_db_contents(con) -> None:
    tables = ("customers", "products", "orders", "order_items")
    counts = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    assert counts == {"customers": 20, "products": 30, "orders": 48, "order_items": 81}
    total = con.execute(
        "SELECT ROUND(SUM(quantity * unit_price), 2) FROM order_items WHERE order_id = 1042"
    ).fetchone()[0]
    assert total == 145.0
    assert con.execute("SELECT status FROM orders WHERE order_id = 1048").fetchone() == (
        "processing",
    )


def _mark(db) -> None:
    with sqlite3.connect(db) as c:  # a row the build never writes: gone once rebuilt
        c.execute("INSERT INTO build_info VALUES ('mark', 'x')")


def _marked(db) -> bool:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM build_info WHERE key = 'mark'").fetchone()[0] == 1


def test_shop_db_is_idempotent(db) -> None:
    _mark(db)
    assert chains.build_shop_db(db) == db
    assert _marked(db)  # same sources: not rebuilt
    assert chains.build_shop_db(db, force=True) == db
    assert not _marked(db)  # forced: rebuilt
    assert not list(db.parent.glob("*.tmp"))  # and the temporary file is gone
    db.write_bytes(b"not a database")  # a broken file is rebuilt, not trusted
    chains.build_shop_db(db)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 48


def test_connection_is_read_only(con) -> None:
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        con.execute("DELETE FROM orders")
    assert con.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 48


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders",
        "select 1;",
        "```sql\nSELECT name FROM products;\n```",
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        "SELECT 'drop table' AS note",
    ],
)
def test_guard_accepts_single_selects(sql: str) -> None:
    cleaned = chains.guard_sql(sql)
    assert cleaned.lower().startswith(("select", "with")) and not cleaned.endswith(";")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DELETE FROM orders", "starts with 'DELETE'"),
        ("UPDATE orders SET status = 'x'", "starts with 'UPDATE'"),
        ("SELECT 1; DROP TABLE orders", "several statements"),
        ("SELECT 1; SELECT 2", "several statements"),
        ("PRAGMA table_info(orders)", "starts with 'PRAGMA'"),
        ("WITH t AS (SELECT 1) DELETE FROM orders", "writing keyword 'DELETE'"),
        ("SELECT * FROM orders -- harmless\n; INSERT INTO orders VALUES (1)", "several statements"),
        ("   ", "No SQL statement"),
    ],
)
def test_guard_rejects_writes_and_multiple_statements(sql: str, reason: str) -> None:
    with pytest.raises(chains.UnsafeSQLError, match=reason):
        chains.guard_sql(sql)


def test_extract_sql_and_run_select(con) -> None:
    reply = (
        "Sure! Here is the query:\n```sql\nSELECT status FROM orders WHERE order_id = 1042;\n```"
    )
    assert chains.extract_sql(reply) == "SELECT status FROM orders WHERE order_id = 1042"
    assert chains.extract_sql("The answer: select 1; drop table x") == "select 1"
    with pytest.raises(chains.UnsafeSQLError, match="no SELECT"):
        chains.extract_sql("The status of order 1042 is delivered.")
    cols, rows = chains.run_select(
        "SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY n DESC", con
    )
    assert cols == ["status", "n"] and rows[0] == ("delivered", 41)


def test_customer_connection_is_least_privilege(db) -> None:
    con = chains.connect_customer_db(17, db)
    assert con.execute("SELECT COUNT(*) FROM my_orders").fetchone() == (5,)
    assert con.execute("SELECT status FROM my_orders WHERE order_id = 1042").fetchall() == []
    assert con.execute(  # order 1042 is another customer's
        "SELECT COUNT(*) FROM my_order_items WHERE order_id = 1045"
    ).fetchone() == (2,)
    assert chains.run_select("SELECT name FROM products WHERE price > 400", con)[1] == [
        ("Folding Dining Table",)
    ]
    refused = [
        ("SELECT name, email FROM customers", "customers.name"),
        ("SELECT * FROM orders", "orders.order_id"),
        ("SELECT customer_id FROM orders", "orders.customer_id"),
        ("SELECT bulky FROM products", "products.bulky"),
    ]
    for sql, culprit in refused:
        with pytest.raises(sqlite3.DatabaseError, match=f"access to {culprit} is prohibited"):
            con.execute(sql)
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):  # no recursion
        con.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT x FROM c LIMIT 5"
        )
    slow = chains.connect_customer_db(17, db, time_limit_s=0.2)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        six_products = ", ".join(f"products {t}" for t in "abcdef")
        slow.execute(f"SELECT COUNT(*) FROM {six_products}").fetchall()
    assert slow.execute("SELECT COUNT(*) FROM products").fetchone() == (30,)  # clock restarts


def test_sql_questions_gold_answers_run(db) -> None:
    con = chains.connect_customer_db(17, db)
    questions = read_jsonl(data_path("shop", "sql_questions.jsonl"), ("id", "question", "sql"))
    assert len(questions) >= 15 and len({q["id"] for q in questions}) == len(questions)
    for q in questions:
        rows = chains.run_select(q["sql"], con)[1]
        assert rows and rows != [(None,)], q["id"]  # every gold query answers something
    example_questions = {question for question, _ in chains.SQL_EXAMPLES}
    assert not example_questions & {q["question"] for q in questions}  # held out
    assert chains.same_result([(1.004, "a"), (2, "b")], [(2, "b"), (1.0, "a")])
    assert not chains.same_result([(1,)], [(1,), (1,)])
    assert not chains.same_result([("delivered",)], [("shipped",)])
    prompt = chains.sql_prompt().format_messages(question="Q?")
    assert len(prompt) == 2 + 2 * len(chains.SQL_EXAMPLES) and prompt[-1].content == "Q?"


def test_people_data() -> None:
    people = read_jsonl(data_path("extraction", "people.jsonl"), ("sentence", "name"))
    assert len(people) >= 12
    for row in people:
        chains.Person(name=row["name"], age=row["age"], height_cm=row["height_cm"])
        assert row["name"] in row["sentence"]


def test_exercise_checks_fail_on_wrong_answers(db) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a returns specialist."), ("human", "Can I return {item}?")]
    )
    good = lambda m: RunnablePassthrough.assign(  # noqa: E731
        answer=prompt | m | StrOutputParser() | RunnableLambda(str.strip)
    )
    unstripped = lambda m: RunnablePassthrough.assign(answer=prompt | m | StrOutputParser())  # noqa: E731
    no_item = lambda m: prompt | m | StrOutputParser()  # noqa: E731
    assert chains.check_lcel_exercise(good)
    assert not chains.check_lcel_exercise(unstripped)
    assert not chains.check_lcel_exercise(no_item)

    def tries(con) -> bool:
        try:
            con.execute("SELECT email FROM customers").fetchall()
        except sqlite3.DatabaseError:
            return True
        return False

    assert chains.check_blocked_exercise(tries)
    assert not chains.check_blocked_exercise(lambda con: True)  # claims without trying
    assert not chains.check_blocked_exercise(lambda con: None)

    class PerChain(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: dict[str, int] = {}
            self.chain: dict = {}

        def on_chat_model_start(self, serialized, messages, *, run_id, metadata=None, **kw):
            self.chain[run_id] = (metadata or {}).get("chain", "?")

        def on_llm_end(self, response, *, run_id, **kw):
            usage = response.generations[0][0].message.usage_metadata
            name = self.chain.pop(run_id)
            self.tokens[name] = self.tokens.get(name, 0) + usage["total_tokens"]

    class LastOnly(PerChain):  # overwrites instead of adding up
        def on_llm_end(self, response, *, run_id, **kw):
            usage = response.generations[0][0].message.usage_metadata
            self.tokens[self.chain.pop(run_id)] = usage["total_tokens"]

    class OutputOnly(PerChain):
        def on_llm_end(self, response, *, run_id, **kw):
            usage = response.generations[0][0].message.usage_metadata
            name = self.chain.pop(run_id)
            self.tokens[name] = self.tokens.get(name, 0) + usage["output_tokens"]

    assert chains.check_callback_exercise(PerChain)
    assert not chains.check_callback_exercise(LastOnly)
    assert not chains.check_callback_exercise(OutputOnly)


def test_agent_tool_and_guarded_parsing(con) -> None:
    assert chains.lookup_order(1048, con).startswith("Order 1048 is processing")
    assert chains.lookup_order(9999, con) == "There is no order 9999."
    assert chains.parse_tool_call("lookup_order(1042)", "Where is my order 1042?") == 1042
    assert chains.parse_tool_call("lookup_order(1017)", "What are your opening hours?") is None
    assert chains.parse_tool_call("none", "Where is order 1042?") is None
    assert chains.parse_tool_call("I will call lookup_order 1042", "order 1042") is None
    model = FakeListChatModel(responses=["lookup_order(1042)", "lookup_order(1017)"])
    trace = chains.run_agent("Where is my order 1042?", model, con)
    assert trace["tool_call"] == "lookup_order(1042)" and "1042" in trace["answer"]
    trace = chains.run_agent("Do you sell tents?", model, con)
    assert trace["tool_call"] is None and trace["answer"] is None


@pytest.mark.slow
def test_structured_output_on_the_real_local_server(local_server) -> None:
    """The local llama.cpp server enforces the tool's JSON schema by grammar: always valid JSON."""
    from conftest import TEST_PORT, settings_from

    from shared import llm

    model = llm.chat_model(
        settings_from({"LOCAL_SERVER_PORT": str(TEST_PORT)}), max_tokens=48, temperature=0
    )
    extract = model.with_structured_output(
        chains.Person, method="function_calling", include_raw=True
    )
    out = extract.invoke("Maria is 34 years old and 168 cm tall.")
    args = out["raw"].tool_calls[0]["args"]  # parsed JSON: the grammar allows nothing else
    assert isinstance(args.get("name"), str) and set(args) <= {"name", "age", "height_cm"}
