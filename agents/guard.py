"""The SQL guard: every statement the model writes passes through ``check()`` before it runs.

It parses the SQL with sqlglot in the target dialect and allows exactly one read-only
statement: SELECT (with WITH, UNION/INTERSECT/EXCEPT), SHOW, DESCRIBE/EXPLAIN. Anything that
writes, locks, reads files, sleeps, sets variables or reaches outside the agent's database is
rejected with a message the model can act on. What runs is the SQL regenerated from the parse
tree (comments dropped), with a LIMIT no larger than the row cap.

The guard is one layer: the query also runs on a read-only connection under a time limit
(``agents/database.py``), and the README recommends a read-only database user.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

# sqlglot warns when it falls back to a raw Command; the guard reports that itself.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# Functions that sleep, lock, read files or load code. Lower-case names.
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "sleep",
        "benchmark",
        "get_lock",
        "release_lock",
        "release_all_locks",
        "is_free_lock",
        "is_used_lock",
        "master_pos_wait",
        "source_pos_wait",
        "master_gtid_wait",
        "wait_for_executed_gtid_set",
        "wait_until_sql_thread_after_gtids",
        "load_file",
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
        "sys_exec",
        "sys_eval",
        "pg_sleep",
        "pg_read_file",
        "lo_import",
        "lo_export",
        "dbms_lock",
        "xp_cmdshell",
    }
)
# Statement types that change data, schema, session or server state (checked anywhere in the tree).
FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    node
    for node in (
        getattr(exp, name, None)
        for name in (
            "Insert",
            "Update",
            "Delete",
            "Merge",
            "Create",
            "Drop",
            "Alter",
            "AlterTable",
            "TruncateTable",
            "Command",
            "Into",
            "Lock",
            "Set",
            "SetItem",
            "Use",
            "Transaction",
            "Commit",
            "Rollback",
            "LoadData",
            "Copy",
            "Grant",
            "Revoke",
            "Pragma",
            "Analyze",
            "Cache",
            "Uncache",
            "Refresh",
            "Kill",
            "Attach",
            "Detach",
            "Install",
            "Export",
        )
    )
    if node is not None
)
SYSTEM_SCHEMAS = frozenset(
    {
        "mysql",
        "information_schema",
        "performance_schema",
        "sys",
        "sqlite_master",
        "sqlite_schema",
        "sqlite_temp_master",
        "temp",
        "main",
    }
)
SQLITE_CATALOG_TABLES = frozenset(
    {
        "sqlite_master",
        "sqlite_schema",
        "sqlite_temp_master",
        "sqlite_temp_schema",
        "sqlite_sequence",
        "sqlite_stat1",
        "sqlite_stat4",
    }
)
SHOW_ALLOWED = re.compile(
    r"^(TABLES|FULL TABLES|COLUMNS|FULL COLUMNS|FIELDS|INDEX|INDEXES|KEYS|CREATE TABLE|TABLE STATUS)\b", re.I
)


class SqlRejected(Exception):
    """The statement is not allowed; the message says why, for the model to correct itself."""


@dataclass(frozen=True)
class CheckedSql:
    sql: str  # what will run
    kind: str  # select | show | describe
    limited: bool  # the guard imposed or lowered the LIMIT


def _dialect(vendor: str) -> str:
    return {"sqlite": "sqlite", "mysql": "mysql"}[vendor]


def check(sql: str, vendor: str, row_limit: int, database: str | None = None) -> CheckedSql:
    """Return the statement to run, or raise SqlRejected. ``database`` is the agent's own schema."""
    if not isinstance(sql, str) or not sql.strip():
        raise SqlRejected("the query is empty")
    if len(sql) > 20_000:
        raise SqlRejected("the query is longer than 20,000 characters")
    if re.search(r"/\*\s*[!+M]", sql):
        # MySQL runs the text of /*! ... */ and /*M! ... */ comments; hints are not needed here.
        raise SqlRejected("executable comments (/*! ... */) and optimizer hints are not allowed")
    if "\\g" in sql.lower() or "\x00" in sql:
        raise SqlRejected("the query contains a client command or a NUL byte")
    dialect = _dialect(vendor)
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as exc:
        raise SqlRejected(f"the query could not be parsed as {dialect} SQL: {str(exc).splitlines()[0][:200]}") from None
    except Exception:  # noqa: BLE001 - the parser's own bugs (e.g. IndexError on "SHOW TABLE"): refuse, never crash
        raise SqlRejected(f"the query could not be parsed as {dialect} SQL") from None
    if len(statements) == 1 and isinstance(statements[0], exp.Command):
        verb = str(statements[0].this).upper()
        if vendor == "sqlite" and verb == "EXPLAIN":
            inner = check(re.sub(r"^\s*EXPLAIN(\s+QUERY\s+PLAN)?", "", sql, flags=re.I), vendor, row_limit, database)
            return CheckedSql("EXPLAIN QUERY PLAN " + inner.sql, "describe", False)
        if vendor == "sqlite" and verb in {"SHOW", "DESCRIBE", "DESC"}:
            raise SqlRejected(f"{verb} is not supported by SQLite; use the schema tool to list tables and describe one")
    if len(statements) != 1:
        raise SqlRejected(f"exactly one statement is allowed, got {len(statements)}; run them one at a time")
    tree = statements[0]
    for comment in _comments(tree):
        if ";" in comment:
            raise SqlRejected("comments must not contain statements")

    if isinstance(tree, exp.Show):
        return _check_show(tree, vendor, dialect)
    if isinstance(tree, exp.Describe):
        return _check_describe(tree, vendor, dialect, row_limit, database)
    if not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
        raise SqlRejected(f"only SELECT, SHOW and DESCRIBE/EXPLAIN are allowed, not {tree.key.upper()}")
    _check_tree(tree, vendor, database)
    limited = _apply_limit(tree, row_limit)
    return _reparsed(CheckedSql(tree.sql(dialect=dialect, comments=False), "select", limited), dialect)


def _reparsed(checked: CheckedSql, dialect: str) -> CheckedSql:
    """What runs is regenerated SQL: it must itself parse as the one statement that was checked."""
    try:
        again = [s for s in sqlglot.parse(checked.sql, read=dialect) if s is not None]
    except Exception:  # noqa: BLE001 - as above: what does not parse back is refused
        again = []
    if len(again) != 1 or type(again[0]) is exp.Command:
        raise SqlRejected(f"the query could not be parsed as {dialect} SQL: it is incomplete")
    return checked


def _comments(tree: exp.Expr) -> list[str]:
    found = []
    for node in tree.walk():
        found.extend(node.comments or [])
    return found


def _check_tree(tree: exp.Expression, vendor: str, database: str | None) -> None:
    for node in tree.walk():
        if isinstance(node, exp.Select) and not node.expressions:
            raise SqlRejected("a SELECT needs at least one column or expression, e.g. SELECT * FROM users")
        if isinstance(node, FORBIDDEN_NODES):
            what = (
                "SELECT ... INTO"
                if isinstance(node, exp.Into)
                else "locking reads (FOR UPDATE / LOCK IN SHARE MODE)"
                if isinstance(node, exp.Lock)
                else node.key.upper()
            )
            raise SqlRejected(f"{what} is not allowed: the agent's queries are read-only")
        if isinstance(node, (exp.SessionParameter, exp.Parameter, exp.Placeholder)) or (
            isinstance(node, exp.Var) and str(node.this).startswith("@")
        ):
            raise SqlRejected("variables (@var, @@setting, parameters) are not allowed")
        if isinstance(node, exp.PropertyEQ) or type(node).__name__ == "ColonEQ":
            raise SqlRejected("variable assignments (:=) are not allowed")
        if isinstance(node, exp.Func):
            name = (node.sql_name() if not isinstance(node, exp.Anonymous) else str(node.this)).lower()
            if name in FORBIDDEN_FUNCTIONS or name.startswith("pragma_"):
                raise SqlRejected(f"the function {name.upper()}() is not allowed")
        if isinstance(node, exp.Table):
            _check_table(node, vendor, database)
    if any(isinstance(n, exp.Anonymous) and str(n.this).lower() in FORBIDDEN_FUNCTIONS for n in tree.walk()):
        raise SqlRejected("forbidden function")


def _check_table(table: exp.Table, vendor: str, database: str | None) -> None:
    schema = (table.args.get("db") and table.db) or ""
    catalog = (table.args.get("catalog") and table.catalog) or ""
    name = (table.name or "").lower()
    if catalog:
        raise SqlRejected(f"tables in other catalogs are not allowed ({catalog}.{schema}.{name})")
    if schema and (database is None or schema.lower() != database.lower()):
        hint = " (use the schema tool to look at tables and columns)" if schema.lower() in SYSTEM_SCHEMAS else ""
        raise SqlRejected(f"tables outside the agent's database are not allowed ({schema}.{name}){hint}")
    if name in SQLITE_CATALOG_TABLES or name in {"information_schema", "performance_schema"}:
        raise SqlRejected(f"the system table {name} is not allowed; use the schema tool to look at tables and columns")


def _apply_limit(tree: exp.Expression, row_limit: int) -> bool:
    """Make sure at most ``row_limit`` rows come back; one more is fetched to tell if there were more."""
    limit = tree.args.get("limit")
    if limit is not None:
        value = limit.expression if isinstance(limit, exp.Limit) else None
        if isinstance(value, exp.Literal) and value.is_int and int(value.this) <= row_limit:
            return False
    fetch = tree.args.get("offset")  # keep OFFSET as written
    tree.set("limit", exp.Limit(expression=exp.Literal.number(row_limit + 1)))
    if fetch is not None:
        tree.set("offset", fetch)
    return True


def _check_show(tree: exp.Show, vendor: str, dialect: str) -> CheckedSql:
    if vendor != "mysql":
        raise SqlRejected("SHOW is not supported by SQLite; use the schema tool to list tables and columns")
    text = tree.sql(dialect=dialect, comments=False)
    what = text[len("SHOW ") :]
    if not SHOW_ALLOWED.match(what):
        raise SqlRejected(
            "only SHOW TABLES, SHOW COLUMNS, SHOW INDEX, SHOW CREATE TABLE and SHOW TABLE STATUS are allowed"
        )
    for node in tree.walk():
        if isinstance(node, exp.Table) and node.args.get("db"):
            raise SqlRejected("SHOW is allowed on the agent's own tables only")
    if re.search(r"\b(FROM|IN)\s+\w+\s+(FROM|IN)\b", what, re.I) or tree.args.get("db"):
        raise SqlRejected("SHOW is allowed on the agent's own database only")
    return CheckedSql(text, "show", False)


def _check_describe(tree: exp.Describe, vendor: str, dialect: str, row_limit: int, database: str | None) -> CheckedSql:
    target = tree.this
    if isinstance(target, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
        _check_tree(target, vendor, database)
        if vendor == "sqlite":
            return CheckedSql("EXPLAIN QUERY PLAN " + target.sql(dialect=dialect, comments=False), "describe", False)
        return CheckedSql("EXPLAIN " + target.sql(dialect=dialect, comments=False), "describe", False)
    if isinstance(target, exp.Table):
        _check_table(target, vendor, database)
        if vendor == "sqlite":
            raise SqlRejected("DESCRIBE is not supported by SQLite; use the schema tool to describe a table")
        return CheckedSql(tree.sql(dialect=dialect, comments=False), "describe", False)
    raise SqlRejected("DESCRIBE/EXPLAIN is allowed on a table or a SELECT only")
