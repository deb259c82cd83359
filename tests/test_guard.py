"""The SQL guard lets exactly one read-only statement through, and nothing it lets through writes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import guard
from agents.guard import SqlRejected

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
