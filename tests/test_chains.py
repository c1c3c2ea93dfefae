"""Tests for shared.chains: shop database, SQL guard, JSON validation, callback, chains, agent."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableLambda

from shared import chains


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return chains.build_shop_db(tmp_path_factory.mktemp("shop") / "shop.db")


@pytest.fixture()
def con(db):
    c = chains.connect_shop_db(db)
    yield c
    c.close()


def test_shop_db_contents(con) -> None:
    counts = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ("customers", "products", "orders", "order_items")}  # fmt: skip
    assert counts == {"customers": 20, "products": 30, "orders": 48, "order_items": 81}
    total = con.execute(
        "SELECT ROUND(SUM(quantity * unit_price), 2) FROM order_items WHERE order_id = 1042"
    ).fetchone()[0]
    assert total == 145.0
    assert con.execute("SELECT status FROM orders WHERE order_id = 1048").fetchone() == (
        "processing",
    )


def test_shop_db_is_idempotent(db) -> None:
    before = db.stat().st_mtime_ns
    assert chains.build_shop_db(db) == db
    assert db.stat().st_mtime_ns == before  # same sources: not rebuilt
    chains.build_shop_db(db, force=True)
    assert db.stat().st_mtime_ns >= before
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
    ["SELECT * FROM orders", "select 1;", "```sql\nSELECT name FROM products;\n```",
     "WITH t AS (SELECT 1 AS x) SELECT x FROM t", "SELECT 'drop table' AS note"],
)  # fmt: skip
def test_guard_accepts_single_selects(sql: str) -> None:
    cleaned = chains.guard_sql(sql)
    assert cleaned.lower().startswith(("select", "with")) and not cleaned.endswith(";")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [("DELETE FROM orders", "starts with 'DELETE'"),
     ("UPDATE orders SET status = 'x'", "starts with 'UPDATE'"),
     ("SELECT 1; DROP TABLE orders", "several statements"),
     ("SELECT 1; SELECT 2", "several statements"),
     ("PRAGMA table_info(orders)", "starts with 'PRAGMA'"),
     ("WITH t AS (SELECT 1) DELETE FROM orders", "writing keyword 'DELETE'"),
     ("SELECT * FROM orders -- harmless\n; INSERT INTO orders VALUES (1)", "several statements"),
     ("   ", "No SQL statement")],
)  # fmt: skip
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


def test_parse_model_json_validates() -> None:
    reply = 'Here you go:\n```json\n{"name": "Xiaohong", "age": 6, "height_cm": 140}\n```'
    assert chains.parse_model_json(reply, chains.Person) == chains.Person(
        name="Xiaohong", age=6, height_cm=140
    )
    with pytest.raises(chains.ModelOutputError, match="age"):
        chains.parse_model_json('{"name": "Xiaohong", "age": "six"}', chains.Person)
    with pytest.raises(chains.ModelOutputError, match="height_cm"):
        chains.parse_model_json('{"name": "Xiaoming", "height_cm": 1300}', chains.Person)
    with pytest.raises(chains.ModelOutputError, match="No complete JSON"):
        chains.parse_model_json('{"name": "Xiaohong", "age": 6', chains.Person)


def _result(inp: int, out: int) -> LLMResult:
    msg = AIMessage(
        "ok", usage_metadata={"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    )
    return LLMResult(generations=[[ChatGeneration(message=msg)]], llm_output={"model_name": "m"})


def test_usage_recorder_accounting() -> None:
    rec = chains.UsageRecorder()
    for inp, out in ((10, 3), (20, 5)):
        run = uuid.uuid4()
        rec.on_chat_model_start({}, [[]], run_id=run)
        rec.on_llm_end(_result(inp, out), run_id=run)
    run = uuid.uuid4()
    rec.on_llm_start({}, ["p"], run_id=run)  # a provider that reports usage the old way
    rec.on_llm_end(LLMResult(generations=[[]], llm_output={"token_usage": {"prompt_tokens": 7,
                                                                          "completion_tokens": 2}}),
                   run_id=run)  # fmt: skip
    run = uuid.uuid4()
    rec.on_chat_model_start({}, [[]], run_id=run)
    rec.on_llm_error(TimeoutError("slow"), run_id=run)
    totals = rec.totals()
    assert totals["calls"] == 4
    assert (totals["prompt_tokens"], totals["completion_tokens"], totals["total_tokens"]) == (
        37,
        10,
        47,
    )
    table = rec.table()
    assert list(table["total_tokens"]) == [13, 25, 9, 0]
    assert list(table["error"]) == ["", "", "", "TimeoutError"]
    assert (table["latency_s"] >= 0).all()


def test_rag_chain_cites_retrieved_pages() -> None:
    docs = [Document("Returns within 30 days.", metadata={"doc_id": "returns-policy"}),
            Document("Fee $5.95.", metadata={"doc_id": "returns-costs"}),
            Document("More on returns.", metadata={"doc_id": "returns-policy"})]  # fmt: skip
    seen = {}

    def retriever(question: str) -> list[Document]:
        seen["q"] = question
        return docs

    model = FakeListChatModel(responses=[" You have 30 days. "])
    out = chains.rag_chain(RunnableLambda(retriever), model).invoke("How long to return?")
    assert out == {"question": "How long to return?", "answer": "You have 30 days.",
                   "sources": ["returns-policy", "returns-costs"]}  # fmt: skip
    assert seen["q"] == "How long to return?"
    assert chains.format_docs(docs[:1]) == "[returns-policy] Returns within 30 days."


def test_sql_chain_guards_generated_sql(con) -> None:
    replies = [
        "SELECT status FROM orders WHERE order_id = 1042;",
        "DELETE FROM orders;",
        "SELECT nope FROM orders",
    ]
    model = FakeListChatModel(responses=replies)
    chain = chains.sql_chain(model, con)
    ok = chain.invoke("What is the status of order 1042?")
    assert ok["sql"] == "SELECT status FROM orders WHERE order_id = 1042" and ok["rows"] == [
        ("delivered",)
    ]
    bad = chain.invoke("Delete everything")
    assert bad["rows"] == [] and "UnsafeSQLError" in bad["error"]
    wrong = chain.invoke("?")
    assert "no such column" in wrong["error"]
    prompt = chains.sql_prompt().format_messages(question="Q?")
    assert len(prompt) == 2 + 2 * len(chains.SQL_EXAMPLES) and prompt[-1].content == "Q?"


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
def test_recorder_on_the_real_local_server(local_server) -> None:
    from conftest import TEST_PORT, settings_from

    from shared import llm

    model = llm.chat_model(
        settings_from({"LOCAL_SERVER_PORT": str(TEST_PORT)}), max_tokens=8, temperature=0
    )
    rec = chains.UsageRecorder()
    model.invoke("Say hello.", config={"callbacks": [rec]})
    row = rec.calls[0]
    assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= 8 and row["error"] == ""
