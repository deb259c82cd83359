"""The SQL guard: every statement the model writes passes through ``check()`` before it runs.

It parses the SQL with sqlglot in the target dialect and accepts only what is listed, refusing the
rest with a one-line reason the model can act on:

- one SELECT (with WITH, UNION/INTERSECT/EXCEPT, subqueries, joins, window functions) on the
  agent's own schema, calling only the functions of ``agents.guard_functions`` (by the name the
  database sees), with no variables, no ``INTO``, no locking read, no other schema;
- ``SHOW [FULL] TABLES``, ``SHOW [FULL] COLUMNS|FIELDS FROM t``, ``SHOW INDEX|INDEXES|KEYS FROM t``,
  ``SHOW CREATE TABLE t`` and ``SHOW TABLE STATUS`` of the own schema, with at most
  ``LIKE 'pattern'`` (MySQL/MariaDB; ``SHOW … WHERE`` takes any expression, so it is refused);
- ``DESCRIBE <own table>`` (MySQL/MariaDB) and ``EXPLAIN`` of a SELECT that passes on its own.

What runs is the SQL regenerated from the parse tree (comments dropped), checked again after
parsing it back, with a LIMIT no larger than the row cap.

The guard is one layer: the query also runs on a read-only connection under a time limit
(``agents/database/``), and the database user's grants beyond reading its own schema are
warned about at start-up and in ``/health`` (``SqlDatabase.privilege_problems``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from agents.guard_functions import FUNCTIONS, OPERATOR_FORMS

# sqlglot warns when it falls back to a raw Command; the guard reports that itself.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

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
# SHOW forms the model may use, by the word sqlglot keeps (FIELDS, INDEXES and KEYS are spelled
# as COLUMNS and INDEX before parsing), with the parts each may have beside FROM <table>, FROM
# <own database> and LIKE 'pattern'. FULL only where MySQL has it.
SHOW_KINDS = {"TABLES": {"full"}, "COLUMNS": {"full", "target"}, "INDEX": {"target"}, "CREATE TABLE": {"target"},
              "TABLE STATUS": set()}  # fmt: skip
SHOW_SYNONYMS = re.compile(r"^\s*SHOW\s+(FULL\s+)?(FIELDS|INDEXES|KEYS)\b", re.I)
SHOW_ALLOWED_TEXT = (
    "only SHOW [FULL] TABLES, SHOW [FULL] COLUMNS/FIELDS FROM t, SHOW INDEX/INDEXES/KEYS FROM t, "
    "SHOW CREATE TABLE t and SHOW TABLE STATUS are allowed, with at most LIKE 'pattern'"
)
# Words MySQL/MariaDB read as a call without parentheses that sqlglot reads as a column.
BARE_CALLS = frozenset({"CURRENT_ROLE"})
CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\(")
WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OPERATORS = (exp.Binary, exp.Connector, exp.Unary, exp.Predicate)
FUNCTIONS_TEXT = "only ordinary scalar, aggregate, window, date, string, math and JSON-reading functions are"


class SqlRejected(Exception):
    """The statement is not allowed; the message says why, for the model to correct itself."""


class SqlNotParsed(SqlRejected):
    """The statement could not be parsed: a syntax error, which the database would refuse too."""


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
    synonym = SHOW_SYNONYMS.match(sql) if vendor == "mysql" else None
    if synonym is not None:
        # sqlglot parses only one spelling of each; the other is the same statement to MySQL.
        canonical = "COLUMNS" if synonym.group(2).upper() == "FIELDS" else "INDEX"
        sql = f"SHOW {synonym.group(1) or ''}{canonical}{sql[synonym.end() :]}"
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as exc:
        first_line = str(exc).splitlines()[0][:200]
        raise SqlNotParsed(f"the query could not be parsed as {dialect} SQL: {first_line}") from None
    except Exception:  # noqa: BLE001 - the parser's own bugs (e.g. IndexError on "SHOW TABLE"): refuse, never crash
        raise SqlNotParsed(f"the query could not be parsed as {dialect} SQL") from None
    if len(statements) == 1 and isinstance(statements[0], exp.Command):
        verb = str(statements[0].this).upper()
        if vendor == "sqlite" and verb == "EXPLAIN":
            inner = check(re.sub(r"^\s*EXPLAIN(\s+QUERY\s+PLAN)?", "", sql, flags=re.I), vendor, row_limit, database)
            if inner.kind != "select":
                raise SqlRejected("EXPLAIN is allowed on a SELECT only")
            return CheckedSql("EXPLAIN QUERY PLAN " + inner.sql, "describe", False)
        if vendor == "sqlite" and verb in {"SHOW", "DESCRIBE", "DESC"}:
            raise SqlRejected(f"{verb} is not supported by SQLite; use the schema tool to list tables and describe one")
        if verb == "SHOW":
            raise SqlRejected(SHOW_ALLOWED_TEXT)
    if len(statements) != 1:
        raise SqlRejected(f"exactly one statement is allowed, got {len(statements)}; run them one at a time")
    tree = statements[0]
    for comment in _comments(tree):
        if ";" in comment:
            raise SqlRejected("comments must not contain statements")

    if isinstance(tree, exp.Show):
        return _check_show(tree, vendor, dialect, database)
    if isinstance(tree, exp.Describe):
        return _check_describe(tree, vendor, dialect, database)
    if not isinstance(tree, SELECTS):
        raise SqlRejected(f"only SELECT, SHOW and DESCRIBE/EXPLAIN are allowed, not {tree.key.upper()}")
    _check_tree(tree, vendor, database)
    limited = _apply_limit(tree, row_limit)
    return CheckedSql(_regenerated(tree, vendor, dialect, database), "select", limited)


SELECTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)


def _regenerated(tree: exp.Expression, vendor: str, dialect: str, database: str | None) -> str:
    """What runs is the SQL regenerated from the checked tree: it must parse back as one query
    that passes the same checks (so the text the database reads is the text that was checked)."""
    sql = tree.sql(dialect=dialect, comments=False)
    try:
        again = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except Exception:  # noqa: BLE001 - as above: what does not parse back is refused
        again = []
    if len(again) != 1 or not isinstance(again[0], SELECTS):
        raise SqlNotParsed(f"the query could not be parsed as {dialect} SQL: it is incomplete")
    _check_tree(again[0], vendor, database)
    return sql


def _comments(tree: exp.Expr) -> list[str]:
    found = []
    for node in tree.walk():
        found.extend(node.comments or [])
    return found


def _check_tree(tree: exp.Expression, vendor: str, database: str | None) -> None:
    """Every node of a query, in every clause, subquery and CTE."""
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
            _check_function(node, vendor)
        if (
            vendor == "mysql"
            and isinstance(node, exp.Column)
            and not node.table
            and not node.this.args.get("quoted")
            and node.name.upper() in BARE_CALLS
        ):
            raise SqlRejected(f"function {node.name.upper()} is not allowed: {FUNCTIONS_TEXT}")
        if isinstance(node, exp.Table):
            _check_table(node, vendor, database)


def _check_function(node: exp.Func, vendor: str) -> None:
    """Only functions on the allow-list (``agents.guard_functions``), by the name the database sees."""
    if isinstance(node.parent, exp.Dot) and node.arg_key == "expression":
        raise SqlRejected(f"functions of a schema are not allowed ({node.parent.sql(dialect=_dialect(vendor))[:80]})")
    name = function_name(node, vendor)
    if name is None:
        # An operator (AND, ->>, COLLATE) calls nothing; its operands are checked as nodes of their own.
        # A conversion the dialect needs no call for is rendered as its operand alone.
        if (
            not isinstance(node, OPERATORS)
            and type(node).__name__ not in OPERATOR_FORMS
            and not _transparent(node, vendor)
        ):
            raise SqlRejected(f"the expression {node.sql(dialect=_dialect(vendor))[:80]} is not allowed")
    elif name not in FUNCTIONS[vendor]:
        raise SqlRejected(f"function {name} is not allowed: {FUNCTIONS_TEXT}")


def _transparent(node: exp.Func, vendor: str) -> bool:
    operands = list(node.iter_expressions())
    dialect = _dialect(vendor)
    return len(operands) == 1 and node.sql(dialect=dialect) == operands[0].sql(dialect=dialect)


def function_name(node: exp.Func, vendor: str) -> str | None:
    """The function's name as the database reads it in the regenerated SQL, upper-case; None for
    an operator or keyword form (``CASE``, ``->>``). sqlglot reads known functions into typed
    classes and renders them per dialect (``DATABASE()`` becomes ``SCHEMA()``), so the rendering
    is what counts; an unknown one stays ``Anonymous``, named as written."""
    if isinstance(node, exp.Anonymous):
        return node.name.upper()
    text = node.sql(dialect=_dialect(vendor), comments=False)
    call = CALL.match(text)
    if call:
        return call.group(1).upper()
    if WORD.match(text) and not any(True for _ in node.iter_expressions()):
        return text.upper()  # a keyword call without parentheses: CURRENT_DATE, LOCALTIME
    return None


def _check_table(table: exp.Table, vendor: str, database: str | None) -> None:
    schema = (table.args.get("db") and table.db) or ""
    catalog = (table.args.get("catalog") and table.catalog) or ""
    name = (table.name or "").lower()
    if catalog:
        raise SqlRejected(f"tables in other catalogs are not allowed ({catalog}.{schema}.{name})")
    if schema and (database is None or schema.lower() != database.lower()):
        hint = " (use the schema tool to look at tables and columns)" if schema.lower() in SYSTEM_SCHEMAS else ""
        raise SqlRejected(f"tables outside the agent's database are not allowed ({schema}.{name}){hint}")
    if vendor == "sqlite" and name.startswith("pragma_"):
        # A PRAGMA read as a table (pragma_database_list: the database's file paths).
        raise SqlRejected(f"the PRAGMA table {name} is not allowed; use the schema tool to look at tables and columns")
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


def _check_show(tree: exp.Show, vendor: str, dialect: str, database: str | None) -> CheckedSql:
    """One of ``SHOW_KINDS`` about the agent's own schema, filtered by a quoted LIKE pattern at most.
    ``SHOW … WHERE`` takes any expression, so it is refused like everything not listed."""
    if vendor != "mysql":
        raise SqlRejected("SHOW is not supported by SQLite; use the schema tool to list tables and columns")
    kind = str(tree.this).upper()
    if kind not in SHOW_KINDS:
        raise SqlRejected(SHOW_ALLOWED_TEXT)
    if tree.args.get("where") is not None:
        raise SqlRejected("SHOW ... WHERE is not allowed; filter with LIKE 'pattern' or query the tables with SELECT")
    parts = {key for key, value in tree.args.items() if value not in (None, False) and key not in {"this", "json"}}
    extra = parts - SHOW_KINDS[kind] - {"db", "like"}
    if extra or ("target" in SHOW_KINDS[kind]) != ("target" in parts):
        raise SqlRejected(SHOW_ALLOWED_TEXT)
    like = tree.args.get("like")
    if like is not None and not (isinstance(like, exp.Literal) and like.is_string):
        raise SqlRejected("SHOW ... LIKE takes a quoted pattern only, e.g. LIKE 'order%'")
    target = tree.args.get("target")
    if target is not None and not isinstance(target, exp.Identifier):
        raise SqlRejected("SHOW is allowed on the agent's own tables only")
    db = tree.args.get("db")
    if db is not None and (
        not isinstance(db, exp.Identifier) or database is None or db.name.lower() != database.lower()
    ):
        raise SqlRejected("SHOW is allowed on the agent's own database only")
    if target is not None:
        _check_table(exp.Table(this=target.copy()), vendor, database)
    return CheckedSql(tree.sql(dialect=dialect, comments=False), "show", False)


def _check_describe(tree: exp.Describe, vendor: str, dialect: str, database: str | None) -> CheckedSql:
    """``DESCRIBE <own table>``, or ``EXPLAIN`` of a SELECT that passes on its own; no options
    (``EXPLAIN ANALYZE`` runs the query)."""
    options = {key for key, value in tree.args.items() if value not in (None, False) and key not in {"this", "as_json"}}
    if options:
        raise SqlRejected("EXPLAIN/DESCRIBE options (ANALYZE, EXTENDED, FORMAT=...) are not allowed")
    target = tree.this
    if isinstance(target, SELECTS):
        _check_tree(target, vendor, database)
        statement = _regenerated(target, vendor, dialect, database)
        prefix = "EXPLAIN QUERY PLAN " if vendor == "sqlite" else "EXPLAIN "
        return CheckedSql(prefix + statement, "describe", False)
    if isinstance(target, exp.Table):
        _check_table(target, vendor, database)
        if vendor == "sqlite":
            raise SqlRejected("DESCRIBE is not supported by SQLite; use the schema tool to describe a table")
        if not isinstance(target.this, exp.Identifier) or target.args.get("joins") or target.args.get("alias"):
            raise SqlRejected("DESCRIBE is allowed on one of the agent's own tables only")
        return CheckedSql(tree.sql(dialect=dialect, comments=False), "describe", False)
    raise SqlRejected("DESCRIBE/EXPLAIN is allowed on a table or a SELECT only")
