"""The SQL guard lets exactly one read-only statement through, and nothing it lets through writes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot.dialects.mysql import MySQL
from sqlglot.dialects.sqlite import SQLite

from agents import guard
from agents.guard import SqlNotParsed, SqlRejected
from agents.guard_functions import FUNCTIONS

REJECTED = [
    # DML
    "INSERT INTO users (id, name) VALUES (999, 'x')",
    "insert into users select * from users",
    "UPDATE users SET name = 'x'",
    "update users set age = age + 1 where id = 1",
    "DELETE FROM orders",
    "delete from orders where id = 1",
    "REPLACE INTO users (id, name) VALUES (1, 'x')",
    "MERGE INTO users USING orders ON users.id = orders.user_id WHEN MATCHED THEN DELETE",
    # DDL
    "DROP TABLE users",
    "drop table if exists users",
    "CREATE TABLE x (id INT)",
    "CREATE TABLE x AS SELECT * FROM users",
    "CREATE INDEX i ON users (name)",
    "CREATE VIEW v AS SELECT 1",
    "ALTER TABLE users ADD COLUMN x INT",
    "ALTER TABLE users DROP COLUMN name",
    "TRUNCATE TABLE users",
    "RENAME TABLE users TO u2",
    "DROP DATABASE test",
    "CREATE DATABASE evil",
    # several statements, hidden statements
    "SELECT 1; DROP TABLE users",
    "SELECT * FROM users; DELETE FROM users",
    "SELECT 1;SELECT 2",
    "SELECT 1 /*! ; DROP TABLE users */",
    "SELECT 1 /*!50000 , (SELECT 1) */",
    "SELECT /*+ MAX_EXECUTION_TIME(100000) */ * FROM users",
    "SELECT * FROM users -- ; DELETE FROM users",
    "SELECT * FROM users /* ; DROP TABLE users */",
    "/* hi */ DELETE FROM users",
    "-- comment\nDELETE FROM users",
    # files
    "SELECT * FROM users INTO OUTFILE '/tmp/users.csv'",
    "SELECT * FROM users INTO DUMPFILE '/tmp/users.bin'",
    "SELECT LOAD_FILE('/etc/passwd')",
    "select load_file(0x2f6574632f706173737764)",
    "LOAD DATA INFILE '/tmp/x' INTO TABLE users",
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT readfile('/etc/passwd')",
    # sleeping, locking
    "SELECT SLEEP(10)",
    "select * from users where sleep(5) = 0",
    "SELECT BENCHMARK(100000000, MD5('x'))",
    "SELECT GET_LOCK('x', 10)",
    "SELECT RELEASE_LOCK('x')",
    "SELECT * FROM users FOR UPDATE",
    "SELECT * FROM users LOCK IN SHARE MODE",
    "SELECT * FROM users FOR SHARE",
    "LOCK TABLES users WRITE",
    # variables and session state
    "SET @a = 1",
    "SET GLOBAL max_connections = 1",
    "SET SESSION sql_mode = ''",
    "SELECT @a := 1",
    "SELECT @@version",
    "SELECT id INTO @v FROM users LIMIT 1",
    "SELECT * FROM users WHERE id = @id",
    # other databases and schemas
    "SELECT * FROM mysql.user",
    "SELECT user, authentication_string FROM mysql.user",
    "SELECT * FROM information_schema.tables",
    "select table_name from INFORMATION_SCHEMA.COLUMNS",
    "SELECT * FROM performance_schema.threads",
    "SELECT * FROM sys.sessions",
    "SELECT * FROM otherdb.users",
    "SELECT * FROM sqlite_master",
    "SELECT sql FROM sqlite_schema",
    "SELECT * FROM users u JOIN mysql.user m ON 1 = 1",
    "SELECT * FROM users WHERE id IN (SELECT id FROM otherdb.users)",
    # transactions and server commands
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "USE mysql",
    "GRANT ALL ON *.* TO 'x'@'%'",
    "KILL 1",
    "FLUSH TABLES",
    "SHOW GRANTS",
    "SHOW PROCESSLIST",
    "CALL some_procedure()",
    "DO SLEEP(1)",
    "HANDLER users OPEN",
    "PRAGMA writable_schema = 1",
    "ATTACH DATABASE '/tmp/x.db' AS x",
    "VACUUM",
    # garbage
    "",
    "   ",
    "SELEC * FROM users",
    "SELECT * FROM",
]

ACCEPTED = [
    ("SELECT * FROM users", "SELECT * FROM users LIMIT 51"),
    ("select name, age from users where age > 30", "SELECT name, age FROM users WHERE age > 30 LIMIT 51"),
    ("SELECT * FROM users LIMIT 10", "SELECT * FROM users LIMIT 10"),
    ("SELECT * FROM users LIMIT 1000", "SELECT * FROM users LIMIT 51"),
    ("SELECT * FROM users LIMIT 10 OFFSET 20", "SELECT * FROM users LIMIT 10 OFFSET 20"),
    ("SELECT COUNT(*) FROM orders", "SELECT COUNT(*) FROM orders LIMIT 51"),
    ("SELECT country, COUNT(*) AS n FROM orders GROUP BY country ORDER BY n DESC", None),
    ("SELECT u.name, SUM(o.total) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.name", None),
    ("WITH big AS (SELECT * FROM orders WHERE total > 1000) SELECT COUNT(*) FROM big", None),
    ("SELECT name FROM users UNION SELECT name FROM products", None),
    ("SELECT name FROM users UNION ALL SELECT name FROM products LIMIT 5", None),
    ("SELECT id FROM users INTERSECT SELECT user_id FROM orders", None),
    ("SELECT id FROM users EXCEPT SELECT user_id FROM orders", None),
    ("SELECT * FROM users WHERE name = 'O''Brien; DROP TABLE users'", None),
    ("SELECT * FROM users WHERE name LIKE '%--%'", None),
    ("SELECT AVG(age), MIN(age), MAX(age) FROM users", None),
    ("SELECT * FROM (SELECT id, name FROM users) AS t WHERE t.id < 5", None),
    ("SELECT CASE WHEN age > 40 THEN 'old' ELSE 'young' END AS bucket, COUNT(*) FROM users GROUP BY bucket", None),
    (
        "-- top users\nSELECT name FROM users ORDER BY age DESC LIMIT 3",
        "SELECT name FROM users ORDER BY age DESC LIMIT 3",
    ),
    ("SELECT DISTINCT country FROM users", None),
    ("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE total > 500)", None),
    ("SELECT COALESCE(NULL, 1), UPPER(name) FROM users", None),
]
ACCEPTED_MYSQL_ONLY = [
    "SHOW TABLES",
    "SHOW COLUMNS FROM users",
    "SHOW CREATE TABLE users",
    "DESCRIBE users",
    "EXPLAIN SELECT * FROM users",
    "SELECT * FROM test.users",
]


@pytest.mark.parametrize("vendor", ["sqlite", "mysql"])
@pytest.mark.parametrize("sql", REJECTED)
def test_it_rejects_what_is_not_one_read_only_statement(sql, vendor):
    with pytest.raises(SqlRejected) as caught:
        guard.check(sql, vendor, 50, database="test")
    assert str(caught.value)  # a reason the model can act on


@pytest.mark.parametrize("vendor", ["sqlite", "mysql"])
@pytest.mark.parametrize("sql, expected", ACCEPTED)
def test_it_accepts_read_only_statements_and_caps_rows(sql, expected, vendor):
    checked = guard.check(sql, vendor, 50, database="test")
    assert checked.kind == "select"
    if expected:
        assert checked.sql == expected
    assert "LIMIT" in checked.sql.upper()
    limit = int(checked.sql.upper().rsplit("LIMIT", 1)[1].split()[0])
    assert limit <= 51


@pytest.mark.parametrize("sql", ACCEPTED_MYSQL_ONLY)
def test_it_accepts_show_describe_and_explain_on_mysql(sql):
    assert guard.check(sql, "mysql", 50, database="test").kind in {"show", "describe", "select"}


def test_it_explains_a_query_plan_on_sqlite_but_refuses_show():
    assert guard.check("EXPLAIN SELECT * FROM users", "sqlite", 50).sql.startswith("EXPLAIN QUERY PLAN SELECT")
    with pytest.raises(SqlRejected, match="use the schema tool"):
        guard.check("SHOW TABLES", "sqlite", 50)


def test_it_says_why_so_the_model_can_correct_itself():
    with pytest.raises(SqlRejected, match="exactly one statement"):
        guard.check("SELECT 1; SELECT 2", "mysql", 50)
    with pytest.raises(SqlRejected, match="SLEEP"):
        guard.check("SELECT SLEEP(1)", "mysql", 50)
    with pytest.raises(SqlRejected, match="schema tool"):
        guard.check("SELECT * FROM information_schema.tables", "mysql", 50, database="shop")


@pytest.mark.parametrize("vendor", ["sqlite", "mysql"])
@pytest.mark.parametrize("sql", ["SELECT title FROM books WHERE", "SELEC 1", "SELECT (1"])
def test_it_tells_a_syntax_error_from_a_refusal(sql, vendor):
    with pytest.raises(SqlNotParsed, match="could not be parsed"):
        guard.check(sql, vendor, 50)
    with pytest.raises(SqlRejected) as refused:
        guard.check("DELETE FROM books", vendor, 50)
    assert not isinstance(refused.value, SqlNotParsed)


def test_it_runs_the_regenerated_statement_without_comments():
    checked = guard.check("SELECT name /* note */ FROM users -- trailing", "mysql", 50)
    assert "note" not in checked.sql and "trailing" not in checked.sql


# --------------------------------------------------------------------------- property


FRAGMENTS = st.sampled_from(
    [
        "SELECT",
        "*",
        "FROM",
        "users",
        "orders",
        "products",
        "WHERE",
        "id",
        "=",
        "1",
        ";",
        "DELETE",
        "UPDATE",
        "SET",
        "name",
        "'x'",
        "INSERT",
        "INTO",
        "VALUES",
        "(1)",
        "DROP",
        "TABLE",
        "CREATE",
        "ALTER",
        "UNION",
        "ALL",
        "LIMIT",
        "10",
        "/*",
        "*/",
        "--",
        "\n",
        "/*!",
        "@a",
        ":=",
        "FOR UPDATE",
        "SLEEP(1)",
        "OUTFILE",
        "'/tmp/x'",
        "WITH",
        "t",
        "AS",
        "(SELECT 1)",
        "TRUNCATE",
        "REPLACE",
        "GRANT",
        "COMMIT",
        "BEGIN",
        ",",
        "COUNT(*)",
        "JOIN",
        "ON",
        "LOAD_FILE('/etc/passwd')",
        "mysql.user",
        "sqlite_master",
        "PRAGMA",
        "ATTACH",
        "VACUUM",
        "RETURNING",
        "ORDER BY",
        "age",
        "GROUP BY",
        "country",
    ]
)
STATEMENTS = st.lists(FRAGMENTS, min_size=1, max_size=12).map(" ".join) | st.sampled_from(
    [s for s, _ in ACCEPTED] + REJECTED
)


def _fingerprint_sqlite(database) -> str:
    import sqlite3

    conn = sqlite3.connect(database.settings["NAME"])
    try:
        digest = hashlib.sha256()
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name"):
            digest.update(f"{name}:{sql}".encode())
            if sql and sql.startswith("CREATE TABLE"):
                for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY 1'):
                    digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def _fingerprint_mysql(database) -> str:
    from tests.agentdb import _mysql_connect
    from tests.conftest import TEST_MYSQL_URL

    conn, _ = _mysql_connect(TEST_MYSQL_URL, database.settings["NAME"])
    try:
        cursor = conn.cursor()
        cursor.execute("SHOW TABLES")
        tables = sorted(row[0] for row in cursor.fetchall())
        cursor.execute("CHECKSUM TABLE " + ", ".join(tables))
        return repr((tables, cursor.fetchall()))
    finally:
        conn.close()


def _check_property(database, fingerprint) -> None:
    before = fingerprint(database)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,
    )
    @given(STATEMENTS)
    def run(sql):
        # Rejected, or failed in the database: either way it must not have written.
        with contextlib.suppress(Exception):
            asyncio.run(database.run(sql))

    run()
    assert fingerprint(database) == before


def test_nothing_it_accepts_modifies_sqlite(tmp_path):
    from tests.agentdb import sqlite_database

    _check_property(sqlite_database(tmp_path / "demo.sqlite3", "demo", row_limit=20), _fingerprint_sqlite)


@pytest.mark.mysql
def test_nothing_it_accepts_modifies_mariadb(mysql_url):
    from tests.agentdb import mysql_database

    with mysql_database(mysql_url, "demo", row_limit=20) as database:
        _check_property(database, _fingerprint_mysql)


# --------------------------------------------------------------------------- the allow-list

# What an ordinary user's run executed with a model sending hostile tool calls, as reported.
REPORTED = [
    "SHOW TABLES WHERE EXTRACTVALUE(1, CONCAT(0x7e, SUBSTRING(LOAD_FILE('/path/of/env/file'), 1, 31)))",
    "SHOW INDEX FROM users WHERE EXTRACTVALUE(1,CONCAT(0x7e,LOAD_FILE('/etc/passwd')))",
    "SELECT @@datadir",
    "SELECT SLEEP(1)",
    "SELECT USER()",
    "SELECT VERSION()",
]
ATTACKS = [
    # SHOW with an expression, SHOW of the server
    "SHOW TABLES WHERE 1 = 1",
    "SHOW FULL TABLES WHERE Table_type = 'VIEW'",
    "SHOW COLUMNS FROM users WHERE Field = 'id'",
    "SHOW FIELDS FROM users WHERE EXTRACTVALUE(1, CONCAT(0x7e, USER()))",
    "SHOW KEYS FROM users WHERE UPDATEXML(1, CONCAT(0x7e, @@datadir), 1)",
    "SHOW INDEXES FROM users WHERE SLEEP(1)",
    "SHOW TABLE STATUS WHERE Name = 'users'",
    "SHOW DATABASES",
    "SHOW VARIABLES",
    "SHOW VARIABLES LIKE 'secure_file_priv'",
    "SHOW GLOBAL STATUS",
    "SHOW STATUS",
    "SHOW GRANTS",
    "SHOW GRANTS FOR CURRENT_USER",
    "SHOW PROCESSLIST",
    "SHOW FULL PROCESSLIST",
    "SHOW TABLES FROM mysql",
    "SHOW TABLES IN information_schema",
    "SHOW COLUMNS FROM user FROM mysql",
    "SHOW COLUMNS FROM mysql.user",
    "SHOW CREATE TABLE mysql.user",
    "SHOW INDEX FROM otherdb.users",
    # XML functions whose errors echo their argument
    "SELECT EXTRACTVALUE(1, CONCAT(0x7e, (SELECT name FROM users LIMIT 1)))",
    "SELECT UPDATEXML(1, CONCAT(0x7e, 'x'), 1)",
    "SELECT * FROM users WHERE EXTRACTVALUE(1, CONCAT(0x7e, LOAD_FILE('/etc/passwd')))",
    # server, session and user
    "SELECT CURRENT_USER()",
    "SELECT CURRENT_USER",
    "SELECT SESSION_USER()",
    "SELECT SYSTEM_USER()",
    "SELECT CURRENT_ROLE",
    "SELECT CONNECTION_ID()",
    "SELECT DATABASE()",
    "SELECT SCHEMA()",
    "SELECT LAST_INSERT_ID()",
    "SELECT ROW_COUNT()",
    "SELECT FOUND_ROWS()",
    "SELECT @@datadir, @@secure_file_priv",
    "SELECT @@global.version",
    "SELECT @x",
    "SELECT `version`()",
    # timing and locks
    "SELECT BENCHMARK(1000000, MD5('x'))",
    "SELECT `sleep`(1)",
    "SELECT GET_LOCK('x', 1)",
    "SELECT IS_FREE_LOCK('x')",
    "SELECT IS_USED_LOCK('x')",
    "SELECT RELEASE_LOCK('x')",
    "SELECT RELEASE_ALL_LOCKS()",
    "SELECT MASTER_POS_WAIT('log', 1)",
    # files, sequences, stored functions
    "SELECT LOAD_FILE('/etc/passwd')",
    "SELECT * FROM users INTO OUTFILE '/tmp/x'",
    "SELECT NEXTVAL(seq)",
    "SELECT UUID()",
    "SELECT otherdb.f(1)",
    "SELECT test.upper('x')",
    "SELECT made_up_function(1)",
    # the options of EXPLAIN that run the query or change what it shows
    "EXPLAIN ANALYZE SELECT * FROM users",
    "EXPLAIN FORMAT=JSON SELECT * FROM users",
    "EXPLAIN SELECT USER()",
    "EXPLAIN SELECT * FROM users WHERE SLEEP(1)",
    "DESCRIBE mysql.user",
]
# Statements SQLite does not have, or reads as something harmless (CURRENT_ROLE: a column).
MYSQL_ONLY = ("SHOW", "DESCRIBE", "SELECT CURRENT_ROLE")
ATTACKS_SQLITE = [
    "SELECT sqlite_version()",
    "SELECT sqlite_source_id()",
    "SELECT sqlite_compileoption_get(0)",
    "SELECT changes()",
    "SELECT last_insert_rowid()",
    "SELECT total_changes()",
    "SELECT randomblob(1000000000)",
    "SELECT * FROM pragma_table_info('users')",
    "SELECT * FROM pragma_database_list",
    "SELECT load_extension('x')",
    "EXPLAIN SELECT sqlite_version()",
]


@pytest.mark.parametrize("sql", REPORTED + ATTACKS)
def test_it_refuses_what_is_not_on_the_allow_list_on_mysql(sql):
    with pytest.raises(SqlRejected) as caught:
        guard.check(sql, "mysql", 50, database="test")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("sql", [s for s in REPORTED + ATTACKS if not s.startswith(MYSQL_ONLY)] + ATTACKS_SQLITE)
def test_it_refuses_what_is_not_on_the_allow_list_on_sqlite(sql):
    with pytest.raises(SqlRejected):
        guard.check(sql, "sqlite", 50)


@pytest.mark.parametrize(
    "sql, reason",
    [
        (REPORTED[0], "SHOW ... WHERE is not allowed"),
        (REPORTED[1], "SHOW ... WHERE is not allowed"),
        (REPORTED[2], "variables"),
        ("SELECT LOAD_FILE('/etc/passwd')", "function LOAD_FILE is not allowed"),
        ("SELECT EXTRACTVALUE(1, 'x')", "function EXTRACTVALUE is not allowed"),
        ("SELECT 1 FROM users WHERE USER() = 'x'", "function USER is not allowed"),
        ("SELECT VERSION()", "function VERSION is not allowed"),
        ("SELECT CURRENT_USER", "function CURRENT_USER is not allowed"),
        ("SELECT `sleep`(1)", "function SLEEP is not allowed"),
        ("SHOW VARIABLES", "only SHOW [FULL] TABLES"),
        ("SELECT otherdb.f(1)", "functions of a schema are not allowed"),
        ("EXPLAIN ANALYZE SELECT 1", "options"),
    ],
)
def test_it_names_what_it_refused_in_one_line(sql, reason):
    with pytest.raises(SqlRejected) as caught:
        guard.check(sql, "mysql", 50, database="test")
    assert reason in str(caught.value) and "\n" not in str(caught.value)


SHOW_ACCEPTED = [
    ("SHOW TABLES", "SHOW TABLES"),
    ("SHOW FULL TABLES", "SHOW FULL TABLES"),
    ("SHOW TABLES LIKE 'order%'", "SHOW TABLES LIKE 'order%'"),
    ("SHOW TABLES FROM test", "SHOW TABLES FROM test"),
    ("SHOW COLUMNS FROM users", "SHOW COLUMNS FROM users"),
    ("SHOW FULL COLUMNS FROM users LIKE 'a%'", "SHOW FULL COLUMNS FROM users LIKE 'a%'"),
    ("SHOW FIELDS FROM users", "SHOW COLUMNS FROM users"),
    ("show full fields from users", "SHOW FULL COLUMNS FROM users"),
    ("SHOW INDEX FROM users", "SHOW INDEX FROM users"),
    ("SHOW INDEXES FROM users", "SHOW INDEX FROM users"),
    ("SHOW KEYS FROM users", "SHOW INDEX FROM users"),
    ("SHOW CREATE TABLE users", "SHOW CREATE TABLE users"),
    ("SHOW TABLE STATUS", "SHOW TABLE STATUS"),
    ("SHOW TABLE STATUS LIKE 'users'", "SHOW TABLE STATUS LIKE 'users'"),
    ("DESCRIBE users", "DESCRIBE users"),
    ("DESC test.users", "DESCRIBE test.users"),
    ("EXPLAIN SELECT * FROM users WHERE age > 30", "EXPLAIN SELECT * FROM users WHERE age > 30"),
]


@pytest.mark.parametrize("sql, expected", SHOW_ACCEPTED)
def test_it_accepts_the_listed_show_and_describe_forms_of_the_own_schema(sql, expected):
    assert guard.check(sql, "mysql", 50, database="test").sql == expected


# Ordinary analytic queries on the demo shop, with the functions they use; they pass the guard
# and run (see test_the_allowed_queries_run_on_the_real_database).
ANALYTIC = [
    "SELECT country, COUNT(*) AS n, AVG(age), SUM(age), MIN(age), MAX(age) FROM users GROUP BY country "
    "HAVING COUNT(*) > 1 ORDER BY n DESC",
    "SELECT name, ROW_NUMBER() OVER (PARTITION BY country ORDER BY age DESC) AS rn, RANK() OVER (ORDER BY age), "
    "DENSE_RANK() OVER (ORDER BY age), LAG(age) OVER (ORDER BY id), LEAD(age) OVER (ORDER BY id), "
    "SUM(age) OVER (PARTITION BY country), NTILE(4) OVER (ORDER BY age), FIRST_VALUE(name) OVER (ORDER BY age) FROM users",
    "SELECT UPPER(name), LOWER(name), LENGTH(name), SUBSTR(name, 1, 3), TRIM(name), REPLACE(name, 'a', 'b'), "
    "COALESCE(city, 'x'), NULLIF(age, 0), ABS(age), ROUND(age / 3.0, 2), INSTR(name, 'a'), IFNULL(city, '') FROM users",
    "SELECT CASE WHEN age > 40 THEN 'a' WHEN age > 30 THEN 'b' ELSE 'c' END AS bucket, COUNT(*) FROM users GROUP BY bucket",
    "SELECT CAST(age AS CHAR), CAST(total AS DECIMAL(10, 2)) FROM users JOIN orders ON orders.user_id = users.id",
    "SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.total > 100)",
    "WITH t AS (SELECT user_id, COUNT(*) AS c FROM orders GROUP BY user_id) SELECT AVG(c), MAX(c) FROM t",
    "SELECT COUNT(DISTINCT country), GROUP_CONCAT(DISTINCT status) FROM orders",
    "SELECT FLOOR(age / 10) * 10 AS decade, COUNT(*) FROM users GROUP BY FLOOR(age / 10) * 10 ORDER BY decade",
    "SELECT p.category, SUM(i.quantity * i.unit_price) AS revenue FROM order_items i "
    "JOIN products p ON p.id = i.product_id GROUP BY p.category ORDER BY revenue DESC",
    "SELECT * FROM products WHERE price = (SELECT MAX(price) FROM products)",
    "SELECT CURRENT_DATE, CURRENT_TIMESTAMP",
]
ANALYTIC_MYSQL = [
    "SELECT DATE_FORMAT(created_at, '%Y-%m') AS month, COUNT(*), SUM(total) FROM orders GROUP BY month ORDER BY month",
    "SELECT YEAR(created_at), MONTH(created_at), DAY(created_at), DAYOFWEEK(created_at), WEEK(created_at), "
    "QUARTER(created_at), HOUR(created_at), DAYNAME(created_at), LAST_DAY(created_at) FROM orders",
    "SELECT DATEDIFF(NOW(), created_at), TIMESTAMPDIFF(DAY, created_at, NOW()), DATE_ADD(created_at, INTERVAL 1 DAY), "
    "DATE_SUB(CURDATE(), INTERVAL 30 DAY), EXTRACT(YEAR FROM created_at), DATE(created_at) FROM orders",
    "SELECT * FROM orders WHERE created_at >= NOW() - INTERVAL 30 DAY",
    "SELECT IF(age > 30, 'old', 'young'), GREATEST(age, 30), LEAST(age, 30), CONCAT(name, '-', country), "
    "CONCAT_WS(',', name, city), LEFT(name, 2), RIGHT(name, 2), LPAD(name, 10, '*'), LOCATE('a', name), "
    "FORMAT(age, 2), SUBSTRING_INDEX(email, '@', -1), CHAR_LENGTH(name) FROM users",
    "SELECT GROUP_CONCAT(DISTINCT name ORDER BY name SEPARATOR ', ') FROM users WHERE age > 60",
    "SELECT STDDEV(total), VARIANCE(total), STDDEV_POP(total), VAR_SAMP(total) FROM orders",
    "SELECT JSON_EXTRACT('{\"a\": 1}', '$.a'), JSON_UNQUOTE(JSON_EXTRACT('{\"a\": \"x\"}', '$.a')), "
    "JSON_LENGTH('[1, 2]'), JSON_KEYS('{\"a\": 1}'), JSON_CONTAINS('[1]', '1'), JSON_VALUE('{\"a\": 1}', '$.a'), "
    "JSON_OBJECT('a', 1), JSON_ARRAY(1, 2)",
    "SELECT age DIV 2, MOD(age, 3), POW(age, 2), SQRT(age), CEIL(age / 7), MD5(name) FROM users",
    "SELECT * FROM products ORDER BY RAND() LIMIT 3",
]
ANALYTIC_SQLITE = [
    "SELECT strftime('%Y-%m', created_at) AS month, COUNT(*), SUM(total) FROM orders GROUP BY month ORDER BY month",
    "SELECT date(created_at), datetime(created_at), julianday('now') - julianday(created_at), "
    "CAST(strftime('%Y', created_at) AS INTEGER) FROM orders",
    "SELECT * FROM orders WHERE created_at >= date('now', '-30 days')",
    "SELECT iif(age > 30, 'old', 'young'), typeof(age), printf('%.2f', age), total(age), quote(name) FROM users",
    "SELECT json_extract('{\"a\": 1}', '$.a'), json_array_length('[1,2]'), json_type('[1]'), json_valid('x')",
    "SELECT name || ' <' || email || '>', max(age, 30), min(age, 30) FROM users",
    "SELECT group_concat(name, ', ') FROM users WHERE age > 60",
]


@pytest.mark.parametrize("vendor", ["sqlite", "mysql"])
@pytest.mark.parametrize("sql", ANALYTIC)
def test_it_accepts_ordinary_analytic_queries(sql, vendor):
    assert guard.check(sql, vendor, 50, database="test").kind == "select"


@pytest.mark.parametrize("sql", ANALYTIC_MYSQL)
def test_it_accepts_the_functions_analysts_use_on_mysql(sql):
    assert guard.check(sql, "mysql", 50, database="test").kind == "select"


@pytest.mark.parametrize("sql", ANALYTIC_SQLITE)
def test_it_accepts_the_functions_analysts_use_on_sqlite(sql):
    assert guard.check(sql, "sqlite", 50).kind == "select"


async def test_the_allowed_queries_run_on_the_real_database(demo_db):
    for sql in ANALYTIC + (ANALYTIC_MYSQL if demo_db.vendor == "mysql" else ANALYTIC_SQLITE):
        assert (await demo_db.run(sql)).columns, sql
    if demo_db.vendor == "mysql":
        for sql, _ in SHOW_ACCEPTED:
            await demo_db.run(sql.replace("test", demo_db.name))


async def test_the_reported_queries_are_refused_before_the_real_database(demo_db):
    for sql in REPORTED + ATTACKS + (ATTACKS_SQLITE if demo_db.vendor == "sqlite" else []):
        if demo_db.vendor == "sqlite" and sql.startswith(MYSQL_ONLY):
            continue
        with pytest.raises(SqlRejected):
            await demo_db.run(sql)


# Where a function can stand in a query: every clause, a subquery, a CTE, a join, EXPLAIN, SHOW.
CLAUSES = [
    "SELECT {f} FROM users",
    "SELECT id FROM users WHERE {f} = 1",
    "SELECT country FROM users GROUP BY country HAVING {f} > 0",
    "SELECT id FROM users ORDER BY {f}",
    "SELECT COUNT(*) FROM users GROUP BY {f}",
    "SELECT id FROM users WHERE id IN (SELECT user_id FROM orders WHERE {f} = 1)",
    "SELECT u.id FROM users u JOIN orders o ON o.user_id = u.id AND {f} = 1",
    "WITH t AS (SELECT {f} AS x FROM users) SELECT x FROM t",
    "SELECT id FROM users UNION SELECT {f} FROM orders",
    "SELECT CONCAT('a', {f}), SUM(age) OVER (PARTITION BY {f}) FROM users",
    "SELECT COALESCE((SELECT {f}), 1)",
    "EXPLAIN SELECT {f}",
]
SHOW_CLAUSES = ["SHOW TABLES LIKE {f}", "SHOW COLUMNS FROM users LIKE {f}", "SHOW TABLES WHERE {f}"]
NAMES = (
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,24}", fullmatch=True)
    | st.sampled_from(sorted(MySQL.Parser.FUNCTIONS) + sorted(SQLite.Parser.FUNCTIONS))
    | st.sampled_from(["LOAD_FILE", "EXTRACTVALUE", "UPDATEXML", "USER", "VERSION", "SLEEP", "BENCHMARK", "GET_LOCK"])
)
ARGUMENTS = st.sampled_from(["", "1", "'x'", "id", "1, 2", "name, 'x'"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(NAMES, ARGUMENTS, st.sampled_from(["mysql", "sqlite"]))
def test_a_function_outside_the_allow_list_never_reaches_the_database(name, arguments, vendor):
    """Refused in every clause, or (a name sqlglot knows) rewritten into a listed function."""
    if name.upper() in FUNCTIONS[vendor]:
        return
    call = f"{name}({arguments})"
    for clause in CLAUSES + (SHOW_CLAUSES if vendor == "mysql" else []):
        sql = clause.format(f=call)
        try:
            checked = guard.check(sql, vendor, 50, database="test")
        except SqlRejected:
            continue
        # Accepted: the name is not called in what runs (beyond the clause's own words: AS (, IN ().
        called = re.compile(rf"\b{re.escape(name)}\s*\(", re.I)
        baseline = guard.check(clause.format(f="ABS(1)"), vendor, 50, database="test").sql
        assert len(called.findall(checked.sql)) <= len(called.findall(baseline)), (sql, checked.sql)


@pytest.mark.parametrize("vendor", ["mysql", "sqlite"])
@pytest.mark.parametrize("name", ["FOO", "made_up", "load_file", "Sleep", "user", "connection_id", "extractvalue"])
def test_a_name_the_parser_does_not_know_is_refused_as_written(name, vendor):
    for clause in CLAUSES:
        with pytest.raises(SqlRejected, match=f"function {name.upper()} is not allowed"):
            guard.check(clause.format(f=f"{name}(1)"), vendor, 50, database="test")


def test_the_run_sql_tool_tells_the_model_what_is_accepted(demo_sqlite):
    from agents.tools import QueryTool

    description = QueryTool(demo_sqlite).description
    for accepted in ("SELECT", "SHOW [FULL] TABLES", "LIKE 'pattern', no WHERE", "DESCRIBE <table>", "EXPLAIN SELECT"):
        assert accepted in description
    assert "Everything else is refused" in description
    assert len(description) < 900  # sent to the model with every call
