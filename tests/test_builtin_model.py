"""The offline built-in model answers questions over any schema it inspects, in English and Chinese."""

from __future__ import annotations

import datetime as dt

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
# The next step up: aggregates per group, comparisons and ranges, periods, superlatives over
# groups (ties kept), N with ties, and combinations; each in English and Chinese.
TODAY = dt.date(2025, 11, 30)  # "the last 30 days" counts back from here
DEMO_MORE = [
    (
        "average price by category",
        "SELECT category, AVG(price) AS a FROM products GROUP BY category ORDER BY a DESC, category",
    ),
    (
        "各类别商品的平均价格",
        "SELECT category, AVG(price) AS a FROM products GROUP BY category ORDER BY a DESC, category",
    ),
    (
        "total order amount per country",
        "SELECT country, SUM(total) AS s FROM orders GROUP BY country ORDER BY s DESC, country",
    ),
    ("每个国家的订单总额", "SELECT country, SUM(total) AS s FROM orders GROUP BY country ORDER BY s DESC, country"),
    (
        "max price per category",
        "SELECT category, MAX(price) AS m FROM products GROUP BY category ORDER BY m DESC, category",
    ),
    (
        "每个类别的最低价格",
        "SELECT category, MIN(price) AS m FROM products GROUP BY category ORDER BY m DESC, category",
    ),
    ("orders over 1500", "SELECT * FROM orders WHERE total > 1500 ORDER BY id LIMIT 100"),
    ("金额超过1500的订单", "SELECT * FROM orders WHERE total > 1500 ORDER BY id LIMIT 100"),
    ("products cheaper than 50", "SELECT * FROM products WHERE price < 50 ORDER BY id LIMIT 100"),
    ("价格低于50的商品", "SELECT * FROM products WHERE price < 50 ORDER BY id LIMIT 100"),
    (
        "products with price between 100 and 200",
        "SELECT * FROM products WHERE price BETWEEN 100 AND 200 ORDER BY id LIMIT 100",
    ),
    ("价格在100到200之间的商品", "SELECT * FROM products WHERE price BETWEEN 100 AND 200 ORDER BY id LIMIT 100"),
    ("users older than 65", "SELECT * FROM users WHERE age > 65 ORDER BY id LIMIT 100"),
    ("年龄大于65的用户", "SELECT * FROM users WHERE age > 65 ORDER BY id LIMIT 100"),
    ("how many orders over 1500?", "SELECT COUNT(*) FROM orders WHERE total > 1500"),
    ("金额超过1500的订单有多少", "SELECT COUNT(*) FROM orders WHERE total > 1500"),
    ("average price of products cheaper than 100", "SELECT AVG(price) FROM products WHERE price < 100"),
    (
        "orders in March 2025",
        "SELECT * FROM orders WHERE created_at >= '2025-03-01' AND created_at < '2025-04-01' ORDER BY id LIMIT 100",
    ),
    (
        "2025年3月的订单",
        "SELECT * FROM orders WHERE created_at >= '2025-03-01' AND created_at < '2025-04-01' ORDER BY id LIMIT 100",
    ),
    (
        "how many orders in 2025?",
        "SELECT COUNT(*) FROM orders WHERE created_at >= '2025-01-01' AND created_at < '2026-01-01'",
    ),
    ("2025年有多少订单", "SELECT COUNT(*) FROM orders WHERE created_at >= '2025-01-01' AND created_at < '2026-01-01'"),
    ("users created after March 2025", "SELECT * FROM users WHERE created_at >= '2025-04-01' ORDER BY id LIMIT 100"),
    ("2025年3月之后注册的用户", "SELECT * FROM users WHERE created_at >= '2025-04-01' ORDER BY id LIMIT 100"),
    ("orders in the last 30 days", "SELECT * FROM orders WHERE created_at >= '2025-10-31' ORDER BY id LIMIT 100"),
    ("最近30天的订单", "SELECT * FROM orders WHERE created_at >= '2025-10-31' ORDER BY id LIMIT 100"),
    (
        "how many users per country in 2025?",
        "SELECT country, COUNT(*) AS n FROM users WHERE created_at >= '2025-01-01' AND created_at < '2026-01-01' "
        "GROUP BY country ORDER BY n DESC, country",
    ),
    (
        "which country has the most users?",
        "SELECT country, COUNT(*) AS n FROM users GROUP BY country HAVING COUNT(*) = "
        "(SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM users GROUP BY country) t) ORDER BY country",
    ),
    (
        "哪个国家的用户最多",
        "SELECT country, COUNT(*) AS n FROM users GROUP BY country HAVING COUNT(*) = "
        "(SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM users GROUP BY country) t) ORDER BY country",
    ),
    (
        "the category with the highest average price",
        "SELECT category, AVG(price) AS a FROM products GROUP BY category HAVING AVG(price) = "
        "(SELECT MAX(v) FROM (SELECT AVG(price) AS v FROM products GROUP BY category) t) ORDER BY category",
    ),
    (
        "平均价格最高的类别",
        "SELECT category, AVG(price) AS a FROM products GROUP BY category HAVING AVG(price) = "
        "(SELECT MAX(v) FROM (SELECT AVG(price) AS v FROM products GROUP BY category) t) ORDER BY category",
    ),
    (
        "which status has the fewest orders?",
        "SELECT status, COUNT(*) AS n FROM orders GROUP BY status HAVING COUNT(*) = "
        "(SELECT MIN(c) FROM (SELECT COUNT(*) AS c FROM orders GROUP BY status) t) ORDER BY status",
    ),
    (
        "订单最少的状态",
        "SELECT status, COUNT(*) AS n FROM orders GROUP BY status HAVING COUNT(*) = "
        "(SELECT MIN(c) FROM (SELECT COUNT(*) AS c FROM orders GROUP BY status) t) ORDER BY status",
    ),
    (
        "the most expensive product",
        "SELECT * FROM products WHERE price = (SELECT MAX(price) FROM products) ORDER BY id",
    ),
    ("最贵的商品", "SELECT * FROM products WHERE price = (SELECT MAX(price) FROM products) ORDER BY id"),
    ("the youngest user", "SELECT * FROM users WHERE age = (SELECT MIN(age) FROM users) ORDER BY id"),
    ("年龄最小的用户", "SELECT * FROM users WHERE age = (SELECT MIN(age) FROM users) ORDER BY id"),
    (
        "the 5 youngest users, with ties",
        "SELECT * FROM users WHERE age <= (SELECT age FROM users ORDER BY age ASC LIMIT 1 OFFSET 4) ORDER BY age ASC, id",
    ),
    (
        "年龄最小的5个用户（含并列）",
        "SELECT * FROM users WHERE age <= (SELECT age FROM users ORDER BY age ASC LIMIT 1 OFFSET 4) ORDER BY age ASC, id",
    ),
]
LIBRARY_MORE = [
    ("average pages per genre", "SELECT genre, AVG(pages) AS a FROM books GROUP BY genre ORDER BY a DESC, genre"),
    ("每种类型的书的平均页数", "SELECT genre, AVG(pages) AS a FROM books GROUP BY genre ORDER BY a DESC, genre"),
    ("books with more than 300 pages", "SELECT * FROM books WHERE pages > 300 ORDER BY id LIMIT 100"),
    ("页数超过300的书", "SELECT * FROM books WHERE pages > 300 ORDER BY id LIMIT 100"),
    ("books published before 1980", "SELECT * FROM books WHERE published < '1980-01-01' ORDER BY id LIMIT 100"),
    ("1980年之前出版的书", "SELECT * FROM books WHERE published < '1980-01-01' ORDER BY id LIMIT 100"),
    (
        "which branch has the most loans?",
        "SELECT branch, COUNT(*) AS n FROM loans GROUP BY branch HAVING COUNT(*) = "
        "(SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM loans GROUP BY branch) t) ORDER BY branch",
    ),
    (
        "哪个分馆的借阅最多",
        "SELECT branch, COUNT(*) AS n FROM loans GROUP BY branch HAVING COUNT(*) = "
        "(SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM loans GROUP BY branch) t) ORDER BY branch",
    ),
    ("the most expensive book", "SELECT * FROM books WHERE price = (SELECT MAX(price) FROM books) ORDER BY id"),
    ("最贵的书", "SELECT * FROM books WHERE price = (SELECT MAX(price) FROM books) ORDER BY id"),
    (
        "top 3 books by pages with ties",
        "SELECT * FROM books WHERE pages >= (SELECT pages FROM books ORDER BY pages DESC LIMIT 1 OFFSET 2) ORDER BY pages DESC, id",
    ),
    (
        "页数最多的3本书（含并列）",
        "SELECT * FROM books WHERE pages >= (SELECT pages FROM books ORDER BY pages DESC LIMIT 1 OFFSET 2) ORDER BY pages DESC, id",
    ),
    ("书的平均价格", "SELECT AVG(price) FROM books"),
    ("每个国家的作者数量", "SELECT country, COUNT(*) AS n FROM authors GROUP BY country ORDER BY n DESC, country"),
]
COMPANY = [
    ("员工有多少人", "SELECT COUNT(*) FROM employees"),
    ("how many employees are there?", "SELECT COUNT(*) FROM employees"),
    (
        "average salary per department",
        "SELECT d.name, AVG(e.salary) AS a FROM employees e JOIN departments d ON d.id = e.department_id "
        "GROUP BY d.name ORDER BY a DESC, d.name",
    ),
    (
        "每个部门的平均工资",
        "SELECT d.name, AVG(e.salary) AS a FROM employees e JOIN departments d ON d.id = e.department_id "
        "GROUP BY d.name ORDER BY a DESC, d.name",
    ),
    (
        "which department has the most employees?",
        "SELECT d.name, COUNT(*) AS n FROM employees e JOIN departments d ON d.id = e.department_id GROUP BY d.name "
        "HAVING COUNT(*) = (SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM employees e JOIN departments d "
        "ON d.id = e.department_id GROUP BY d.name) t) ORDER BY d.name",
    ),
    (
        "哪个部门的员工最多",
        "SELECT d.name, COUNT(*) AS n FROM employees e JOIN departments d ON d.id = e.department_id GROUP BY d.name "
        "HAVING COUNT(*) = (SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM employees e JOIN departments d "
        "ON d.id = e.department_id GROUP BY d.name) t) ORDER BY d.name",
    ),
    ("top 3 employees by salary", "SELECT * FROM employees ORDER BY salary DESC, id LIMIT 3"),
    ("工资最高的3个员工", "SELECT * FROM employees ORDER BY salary DESC, id LIMIT 3"),
    (
        "the highest paid employee",
        "SELECT * FROM employees WHERE salary = (SELECT MAX(salary) FROM employees) ORDER BY id",
    ),
    ("工资最高的员工", "SELECT * FROM employees WHERE salary = (SELECT MAX(salary) FROM employees) ORDER BY id"),
    ("orders over 200", "SELECT * FROM orders WHERE amount > 200 ORDER BY id LIMIT 100"),
    ("金额大于200的订单", "SELECT * FROM orders WHERE amount > 200 ORDER BY id LIMIT 100"),
    (
        "orders in 2025",
        "SELECT * FROM orders WHERE order_date >= '2025-01-01' AND order_date < '2026-01-01' ORDER BY id LIMIT 100",
    ),
    (
        "2025年的订单",
        "SELECT * FROM orders WHERE order_date >= '2025-01-01' AND order_date < '2026-01-01' ORDER BY id LIMIT 100",
    ),
    (
        "number of customers per country",
        "SELECT country, COUNT(*) AS n FROM customers GROUP BY country ORDER BY n DESC, country",
    ),
    ("每个国家的客户数量", "SELECT country, COUNT(*) AS n FROM customers GROUP BY country ORDER BY n DESC, country"),
    ("average price of products", "SELECT AVG(price) FROM products"),
    ("产品的平均价格", "SELECT AVG(price) FROM products"),
    (
        "products with price between 20 and 40",
        "SELECT * FROM products WHERE price BETWEEN 20 AND 40 ORDER BY id LIMIT 100",
    ),
    ("价格在20到40之间的产品", "SELECT * FROM products WHERE price BETWEEN 20 AND 40 ORDER BY id LIMIT 100"),
    (
        "the category with the highest average price",
        "SELECT category, AVG(price) AS a FROM products GROUP BY category HAVING AVG(price) = "
        "(SELECT MAX(v) FROM (SELECT AVG(price) AS v FROM products GROUP BY category) t) ORDER BY category",
    ),
    (
        "平均价格最高的类别",
        "SELECT category, AVG(price) AS a FROM products GROUP BY category HAVING AVG(price) = "
        "(SELECT MAX(v) FROM (SELECT AVG(price) AS v FROM products GROUP BY category) t) ORDER BY category",
    ),
    (
        "customers who signed up in 2025",
        "SELECT * FROM customers WHERE signup_date >= '2025-01-01' AND signup_date < '2026-01-01' ORDER BY id LIMIT 100",
    ),
    (
        "2025年注册的客户",
        "SELECT * FROM customers WHERE signup_date >= '2025-01-01' AND signup_date < '2026-01-01' ORDER BY id LIMIT 100",
    ),
    (
        "how many orders per customer",
        "SELECT c.name, COUNT(*) AS n FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.name ORDER BY n DESC, c.name",
    ),
    ("total order amount", "SELECT SUM(amount) FROM orders"),
    ("订单总额", "SELECT SUM(amount) FROM orders"),
    (
        "employees hired in 2024",
        "SELECT * FROM employees WHERE hired_at >= '2024-01-01' AND hired_at < '2025-01-01' ORDER BY id LIMIT 100",
    ),
    (
        "2024年入职的员工",
        "SELECT * FROM employees WHERE hired_at >= '2024-01-01' AND hired_at < '2025-01-01' ORDER BY id LIMIT 100",
    ),
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
    agent = Agent(BuiltinModel(today=TODAY), [SchemaTool(database), QueryTool(database)])
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


@pytest.mark.parametrize("question, oracle", DEMO_MORE, ids=[q for q, _ in DEMO_MORE])
async def test_it_answers_the_next_step_up_on_the_demo_schema(demo_db, question, oracle):
    await check(demo_db, question, oracle)


@pytest.mark.parametrize("question, oracle", LIBRARY_MORE, ids=[q for q, _ in LIBRARY_MORE])
async def test_it_answers_the_next_step_up_on_a_schema_it_has_never_seen(library_db, question, oracle):
    await check(library_db, question, oracle)


@pytest.mark.parametrize("question, oracle", COMPANY, ids=[q for q, _ in COMPANY])
async def test_it_finds_tables_and_columns_by_common_words_when_the_schema_declares_none(company_db, question, oracle):
    await check(company_db, question, oracle)


async def test_ties_are_kept_and_said(demo_sqlite):
    sink, result = await ask(demo_sqlite, "the 5 youngest users, with ties")
    rows = query_rows(sink)
    assert len(rows) > 5 and len({row[3] for row in rows}) <= 2  # every user of the boundary age is in
    assert "tied with the last" in result.final_response
    _, result = await ask(demo_sqlite, "the youngest user")
    assert "rows tie" in result.final_response


async def test_a_filter_on_a_column_that_is_not_there_is_refused_not_guessed(demo_db):
    sink, result = await ask(demo_db, "products with weight over 5")
    assert not [e for e in sink.of_type(EventType.TOOL_STARTED) if e["data"]["name"] == "run_sql"]
    assert "weight" in result.final_response and "OPENAI_API_KEY" in result.final_response


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
