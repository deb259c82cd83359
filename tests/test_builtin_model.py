"""The offline built-in model answers questions over any schema it inspects, in English and Chinese."""

from __future__ import annotations

import pytest

from agents.builtin import BuiltinModel, parse_intent, zh_number
from agents.events import EventType, TraceOutcome
from agents.loop import Agent
from agents.sink import ListSink
from agents.tools import QueryTool, SchemaTool

# (question, SQL whose rows the answer must show). ORDERED compares row order too.
DEMO = [
    ("显示用户表的10条用户数据", "SELECT * FROM users LIMIT 10"),
    ("显示5条订单数据", "SELECT * FROM orders LIMIT 5"),
    ("显示三条商品", "SELECT * FROM products LIMIT 3"),
    ("查看十五个用户", "SELECT * FROM users LIMIT 15"),
    ("给我看两条订单明细", "SELECT * FROM order_items LIMIT 2"),
    ("show 7 users", "SELECT * FROM users LIMIT 7"),
    ("list products", "SELECT * FROM products LIMIT 10"),
    ("show me the order items", "SELECT * FROM order_items LIMIT 10"),
    ("how many users are there?", "SELECT COUNT(*) FROM users"),
    ("count the orders", "SELECT COUNT(*) FROM orders"),
    ("用户有多少个？", "SELECT COUNT(*) FROM users"),
    ("商品的数量", "SELECT COUNT(*) FROM products"),
    (
        "how many orders per country?",
        "SELECT country, COUNT(*) AS n FROM orders GROUP BY country ORDER BY n DESC, country",
    ),
    ("count users by city", "SELECT city, COUNT(*) AS n FROM users GROUP BY city ORDER BY n DESC, city"),
    (
        "number of orders for each status",
        "SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY n DESC, status",
    ),
    ("每个国家的订单数", "SELECT country, COUNT(*) AS n FROM orders GROUP BY country ORDER BY n DESC, country"),
    ("按类别统计商品数量", "SELECT category, COUNT(*) AS n FROM products GROUP BY category ORDER BY n DESC, category"),
    ("各状态的订单有多少", "SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY n DESC, status"),
    ("top 5 products by price", "SELECT * FROM products ORDER BY price DESC, id LIMIT 5"),
    ("the 3 cheapest products", "SELECT * FROM products ORDER BY price ASC, id LIMIT 3"),
    ("bottom 4 products by stock", "SELECT * FROM products ORDER BY stock ASC, id LIMIT 4"),
    ("价格最高的5个商品", "SELECT * FROM products ORDER BY price DESC, id LIMIT 5"),
    ("库存最少的3个产品", "SELECT * FROM products ORDER BY stock ASC, id LIMIT 3"),
    ("金额最高的前3个订单", "SELECT * FROM orders ORDER BY total DESC, id LIMIT 3"),
    ("average age of users", "SELECT AVG(age) FROM users"),
    ("what is the maximum price of products?", "SELECT MAX(price) FROM products"),
    ("minimum stock of products", "SELECT MIN(stock) FROM products"),
    ("sum of total in orders", "SELECT SUM(total) FROM orders"),
    ("用户的平均年龄", "SELECT AVG(age) FROM users"),
    ("商品的最低价格", "SELECT MIN(price) FROM products"),
    ("订单金额的总和", "SELECT SUM(total) FROM orders"),
    ("users where country is Germany", "SELECT * FROM users WHERE country = 'Germany'"),
    ("orders with status paid", "SELECT * FROM orders WHERE status = 'paid' LIMIT 100"),
    ("国家是China的用户", "SELECT * FROM users WHERE country = 'China'"),
    ("状态为cancelled的订单", "SELECT * FROM orders WHERE status = 'cancelled' LIMIT 100"),
    ("latest 5 orders", "SELECT * FROM orders ORDER BY created_at DESC LIMIT 5"),
    ("the most recent users", "SELECT * FROM users ORDER BY created_at DESC LIMIT 10"),
    ("最近的3个订单", "SELECT * FROM orders ORDER BY created_at DESC LIMIT 3"),
    ("最新注册的五个用户", "SELECT * FROM users ORDER BY created_at DESC LIMIT 5"),
]
LIBRARY = [
    ("show 4 books", "SELECT * FROM books LIMIT 4"),
    ("how many loans?", "SELECT COUNT(*) FROM loans"),
    ("how many books per genre?", "SELECT genre, COUNT(*) AS n FROM books GROUP BY genre ORDER BY n DESC, genre"),
    ("count loans by branch", "SELECT branch, COUNT(*) AS n FROM loans GROUP BY branch ORDER BY n DESC, branch"),
    ("top 3 books by pages", "SELECT * FROM books ORDER BY pages DESC, id LIMIT 3"),
    ("the 2 cheapest books", "SELECT * FROM books ORDER BY price ASC, id LIMIT 2"),
    ("average price of books", "SELECT AVG(price) FROM books"),
    ("max born of authors", "SELECT MAX(born) FROM authors"),
    ("authors where country is Japan", "SELECT * FROM authors WHERE country = 'Japan'"),
    ("books with genre essay", "SELECT * FROM books WHERE genre = 'essay' LIMIT 100"),
    ("latest 4 loans", "SELECT * FROM loans ORDER BY loaned_at DESC LIMIT 4"),
    ("显示3条books数据", "SELECT * FROM books LIMIT 3"),
    ("authors 有多少", "SELECT COUNT(*) FROM authors"),
    ("每个branch的loans数量", "SELECT branch, COUNT(*) AS n FROM loans GROUP BY branch ORDER BY n DESC, branch"),
]


async def ask(database, question: str) -> tuple[ListSink, object]:
    sink = ListSink()
    agent = Agent(BuiltinModel(), [SchemaTool(database), QueryTool(database)])
    result = await agent.run(question, sink)
    return sink, result


def query_rows(sink: ListSink) -> list[list]:
    queries = [e["data"] for e in sink.of_type(EventType.TOOL_COMPLETED) if e["data"]["name"] == "run_sql"]
    assert len(queries) == 1, "exactly one query"
    return queries[0]["outputs"]["rows"]


async def check(database, question: str, oracle: str) -> None:
    sink, result = await ask(database, question)
    assert result.status == TraceOutcome.SUCCESS
    expected = (await database.run(oracle)).rows
    assert expected, "the oracle returns rows"
    assert query_rows(sink) == expected
    assert result.final_response  # a summary and a table
    if len(expected[0]) > 1:
        assert "|" in result.final_response


@pytest.mark.parametrize("question, oracle", DEMO, ids=[q for q, _ in DEMO])
async def test_it_answers_on_the_demo_schema(demo_db, question, oracle):
    await check(demo_db, question, oracle)


@pytest.mark.parametrize("question, oracle", LIBRARY, ids=[q for q, _ in LIBRARY])
async def test_it_answers_on_a_schema_it_has_never_seen(library_db, question, oracle):
    await check(library_db, question, oracle)


@pytest.mark.parametrize("question", ["what tables are there?", "数据库里有哪些表？"])
async def test_it_lists_tables(demo_db, question):
    sink, result = await ask(demo_db, question)
    assert not [e for e in sink.of_type(EventType.TOOL_COMPLETED) if e["data"]["name"] == "run_sql"]
    for table in ("users", "orders", "products", "order_items"):
        assert f"| {table} |" in result.final_response


@pytest.mark.parametrize("question", ["describe the orders table", "订单表的结构"])
async def test_it_describes_a_table(demo_db, question):
    _, result = await ask(demo_db, question)
    for column in ("user_id", "status", "total", "created_at"):
        assert f"| {column} |" in result.final_response


@pytest.mark.parametrize("question", ["what's the weather in Paris?", "写一首关于春天的诗", "show me the spaceships"])
async def test_it_says_what_it_can_do_instead_of_inventing_sql(demo_db, question):
    sink, result = await ask(demo_db, question)
    assert result.status == TraceOutcome.SUCCESS
    assert not [e for e in sink.of_type(EventType.TOOL_STARTED) if e["data"]["name"] == "run_sql"]
    assert ("OPENAI_API_KEY" in result.final_response) and (
        "offline" in result.final_response or "离线" in result.final_response
    )


async def test_it_follows_the_tool_protocol_with_estimated_usage(demo_sqlite):
    sink, _ = await ask(demo_sqlite, "显示用户表的10条用户数据")
    calls = [e["data"]["outputs"]["tool_calls"] for e in sink.of_type(EventType.THINK_COMPLETED)]
    assert [c[0]["function"]["name"] if c else None for c in calls] == [
        "describe_schema",
        "describe_schema",
        "run_sql",
        None,
    ]
    thinks = sink.of_type(EventType.THINK_COMPLETED)
    assert all(t["data"]["model"] == "builtin" and t["data"]["token_usage"]["total_tokens"] > 0 for t in thinks)
    assert sink.events[0]["data"]["metadata"]["model"] == "builtin"
    assert sink.events[0]["data"]["metadata"]["offline_model"] is True
    assert sink.of_type(EventType.THINK_DELTA)  # the answer streams
    assert [row[1] for row in query_rows(sink)[:3]] == ["Alice", "Bob", "Charlie"]


@pytest.mark.parametrize(
    "text, number", [("一", 1), ("十", 10), ("十五", 15), ("二十", 20), ("两", 2), ("一百二十", 120)]
)
def test_it_reads_chinese_numerals(text, number):
    assert zh_number(text) == number


def test_it_defaults_to_ten_rows():
    assert parse_intent("显示用户表的数据").limit == 10
