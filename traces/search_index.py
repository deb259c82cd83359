"""The search index of the history: what a trace's question (``request``) and answer
(``final_response``) contain, so a search need not read every trace.

SQLite: an FTS5 table with the trigram tokenizer. Trace's key is a UUID and an FTS5 table is keyed
by an integer, so a small table numbers the traces; the FTS5 table takes its text from a view of
that table joined to the traces (external content: the text is not stored twice). MariaDB: a side
table in the Mroonga engine, with a bigram full-text index that splits words into pairs of
characters and folds case and accents as ``utf8mb4_unicode_ci`` does. Triggers on the traces table
keep both in step with every insert, update of the two columns and delete, whoever writes.

The index narrows the search; the ``icontains`` check on the trace itself keeps its meaning (a
case-insensitive substring, folded as the database's own ``LIKE`` folds it). A term shorter than
the index serves (under three characters on SQLite, two on MariaDB), or a database without the
index (MySQL, a MariaDB without Mroonga), is searched by a scan of the newest traces only: the
search is partial.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connections

TABLE = "traces_trace_search"
KEYS = "traces_trace_search_key"  # SQLite: the integer key of each trace in the FTS5 table
SOURCE = "traces_trace_search_source"  # SQLite: the FTS5 table's content, a view

# The shortest term each index answers: trigrams need three characters, Mroonga's bigrams two
# (it can look one character up as the prefix of every pair, but that reads most of the index).
MIN_LENGTH = {"sqlite": 3, "mysql": 2}
# How many of the newest traces a search without the index reads: a scan of these stays well
# under a second (MariaDB's collation-aware LIKE is several times slower per row than SQLite's).
SCAN_ROWS = {"sqlite": 100_000, "mysql": 10_000}

# A search through the index first reads this many of the newest traces (from the page's cursor on)
# itself: a common term fills a page there at once, and the index is asked only when the matches are
# rarer, so few that looking each up and sorting them is cheap.
SCAN_FIRST = 20_000
# A term with no more matches than this in the whole index is looked up there at once (looking
# these up and sorting them is cheap); one with more is common enough to look for by a scan first.
FEW = 2_000
# The most matches a search reads from the index: a term that matches more, none of them among the
# traces scanned first, finds only these (the newest the index has) and the page says so.
ID_LIMIT = 10_000

# Whether a database has the index, by connection alias and database name (the tests' database
# differs from the configured one); the migration that adds or drops the index forgets it.
_present: dict[tuple[str, str], bool] = {}


@dataclass(frozen=True)
class Plan:
    """How a term is searched: through the index, or by a scan of the newest ``scan_rows`` traces."""

    indexed: bool
    scan_rows: int
    min_length: int  # the shortest term the index answers (0: there is no index)


def plan(term: str, using: str = "default") -> Plan:
    connection = connections[using]
    vendor = connection.vendor
    minimum = MIN_LENGTH.get(vendor, 0) if has_index(using) else 0
    return Plan(indexed=0 < minimum <= len(term), scan_rows=SCAN_ROWS.get(vendor, 10_000), min_length=minimum)


def has_index(using: str = "default") -> bool:
    connection = connections[using]
    key = (using, str(connection.settings_dict["NAME"]))
    if key not in _present:
        with connection.cursor() as cursor:
            _present[key] = TABLE in connection.introspection.table_names(cursor)
    return _present[key]


def forget(using: str = "default") -> None:
    for key in [key for key in _present if key[0] == using]:
        del _present[key]


def phrase(term: str, vendor: str) -> str:
    """``term`` as one quoted phrase of the index's query language: its quotes, ``*``, ``OR``,
    ``-`` or ``NEAR`` are text."""
    if vendor == "sqlite":
        return '"' + term.replace('"', '""') + '"'
    return '"' + term.replace("\\", "\\\\").replace('"', '\\"') + '"'


def matches(vendor: str, column: str = "trace_id") -> str:
    """SQL selecting ``column`` of the index's rows matching a phrase (its one parameter)."""
    if vendor == "sqlite":
        return f"SELECT {column} FROM {TABLE} s JOIN {KEYS} k ON k.id = s.rowid WHERE {TABLE} MATCH %s"
    return f"SELECT {column} FROM {TABLE} WHERE MATCH(request, final_response) AGAINST (%s IN BOOLEAN MODE)"


def matching_ids(term: str, vendor: str) -> tuple[str, list[str]]:
    """SQL selecting the ids of the traces whose text the index says contains ``term``, and its
    parameters."""
    return matches(vendor), [phrase(term, vendor)]


def limited_ids(term: str, vendor: str, limit: int) -> tuple[str, list[str]]:
    """``matching_ids`` reading no more than ``limit`` ids from the index (on SQLite the newest
    written first)."""
    sql = matches(vendor) + (" ORDER BY s.rowid DESC" if vendor == "sqlite" else "")
    return f"SELECT trace_id FROM ({sql} LIMIT {int(limit)}) AS matches", [phrase(term, vendor)]


def more_than(term: str, limit: int, using: str = "default") -> bool:
    """The index has more than ``limit`` matches of ``term`` (reading at most ``limit`` + 1)."""
    connection = connections[using]
    vendor = connection.vendor
    sql = matches(vendor, "1") if vendor != "sqlite" else f"SELECT 1 FROM {TABLE} WHERE {TABLE} MATCH %s"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM ({sql} LIMIT {int(limit) + 1}) AS counted", [phrase(term, vendor)])
        return cursor.fetchone()[0] > limit


# -- creating and dropping the index (migration 0011_trace_search) ---------------------------------
#
# On SQLite, a later migration that Django carries out by remaking ``traces_trace`` (most changes of
# its fields or of a foreign key's index) must drop the index first and create it again after
# (``drop``, then ``create``, as RunPython steps around it): the view below cannot outlive the table
# it reads, and the triggers would go with the old table.

SQLITE_CREATE = [
    f"CREATE TABLE {KEYS} (id INTEGER PRIMARY KEY, trace_id char(32) NOT NULL UNIQUE)",
    f"""CREATE VIEW {SOURCE} AS
        SELECT k.id AS id, t.request AS request, t.final_response AS final_response
        FROM {KEYS} k JOIN traces_trace t ON t.id = k.trace_id""",
    f"""CREATE VIRTUAL TABLE {TABLE} USING fts5(
        request, final_response, content='{SOURCE}', content_rowid='id', tokenize='trigram')""",
    f"""CREATE TRIGGER {TABLE}_insert AFTER INSERT ON traces_trace BEGIN
        INSERT INTO {KEYS} (trace_id) VALUES (NEW.id);
        INSERT INTO {TABLE} (rowid, request, final_response)
            SELECT id, NEW.request, NEW.final_response FROM {KEYS} WHERE trace_id = NEW.id;
    END""",
    # An external-content FTS5 table forgets a row given the text it indexed: OLD's.
    f"""CREATE TRIGGER {TABLE}_update AFTER UPDATE OF request, final_response ON traces_trace
    WHEN OLD.request IS NOT NEW.request OR OLD.final_response IS NOT NEW.final_response BEGIN
        INSERT INTO {TABLE} ({TABLE}, rowid, request, final_response)
            SELECT 'delete', id, OLD.request, OLD.final_response FROM {KEYS} WHERE trace_id = OLD.id;
        INSERT INTO {TABLE} (rowid, request, final_response)
            SELECT id, NEW.request, NEW.final_response FROM {KEYS} WHERE trace_id = NEW.id;
    END""",
    f"""CREATE TRIGGER {TABLE}_delete AFTER DELETE ON traces_trace BEGIN
        INSERT INTO {TABLE} ({TABLE}, rowid, request, final_response)
            SELECT 'delete', id, OLD.request, OLD.final_response FROM {KEYS} WHERE trace_id = OLD.id;
        DELETE FROM {KEYS} WHERE trace_id = OLD.id;
    END""",
    f"INSERT INTO {KEYS} (trace_id) SELECT id FROM traces_trace",
    f"INSERT INTO {TABLE} ({TABLE}) VALUES ('rebuild')",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {TABLE}_insert",
    f"DROP TRIGGER IF EXISTS {TABLE}_update",
    f"DROP TRIGGER IF EXISTS {TABLE}_delete",
    f"DROP TABLE IF EXISTS {TABLE}",
    f"DROP VIEW IF EXISTS {SOURCE}",
    f"DROP TABLE IF EXISTS {KEYS}",
]

# Mroonga is not transactional: a trace inserted by a transaction that rolls back stays in the
# index. It is harmless (the search joins the index to the traces and checks the text there), and
# REPLACE makes writing a trace's row again safe.
MARIADB_CREATE = [
    # The trace's key as text: Mroonga has no uuid type (the traces' key from MariaDB 10.7 on,
    # char(32) before); 36 characters hold either.
    f"""CREATE TABLE {TABLE} (
        trace_id char(36) NOT NULL PRIMARY KEY,
        request longtext NOT NULL,
        final_response longtext NOT NULL,
        FULLTEXT INDEX {TABLE}_text (request, final_response)
            COMMENT 'tokenizer "TokenBigramSplitSymbolAlphaDigit", normalizer "NormalizerMySQLUnicodeCI"'
    ) ENGINE=Mroonga DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    f"""CREATE TRIGGER {TABLE}_insert AFTER INSERT ON traces_trace FOR EACH ROW
        REPLACE INTO {TABLE} (trace_id, request, final_response) VALUES (NEW.id, NEW.request, NEW.final_response)""",
    # Compared as bytes: the collation would call a change of case or accent no change.
    f"""CREATE TRIGGER {TABLE}_update AFTER UPDATE ON traces_trace FOR EACH ROW
        IF NOT (BINARY OLD.request <=> BINARY NEW.request AND BINARY OLD.final_response <=> BINARY NEW.final_response)
        THEN
            REPLACE INTO {TABLE} (trace_id, request, final_response) VALUES (NEW.id, NEW.request, NEW.final_response);
        END IF""",
    f"""CREATE TRIGGER {TABLE}_delete AFTER DELETE ON traces_trace FOR EACH ROW
        DELETE FROM {TABLE} WHERE trace_id = OLD.id""",
    f"INSERT INTO {TABLE} (trace_id, request, final_response) SELECT id, request, final_response FROM traces_trace",
]
MARIADB_DROP = [
    f"DROP TRIGGER IF EXISTS {TABLE}_insert",
    f"DROP TRIGGER IF EXISTS {TABLE}_update",
    f"DROP TRIGGER IF EXISTS {TABLE}_delete",
    f"DROP TABLE IF EXISTS {TABLE}",
]


def mroonga_loaded(cursor) -> bool:
    """The server has the Mroonga engine (``INSTALL SONAME 'ha_mroonga'``, as an administrator)."""
    cursor.execute("SHOW ENGINES")
    return any(row[0].lower() == "mroonga" and row[1] in ("YES", "DEFAULT") for row in cursor.fetchall())


def create(schema_editor) -> None:
    """Add the index and fill it from the traces there are; on MySQL, or a MariaDB without Mroonga, nothing."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            statements = SQLITE_CREATE
        elif connection.vendor == "mysql" and connection.mysql_is_mariadb and mroonga_loaded(cursor):
            statements = MARIADB_CREATE
        else:
            statements = []
        for statement in statements:
            cursor.execute(statement)
    forget(connection.alias)


def drop(schema_editor) -> None:
    connection = schema_editor.connection
    statements = {"sqlite": SQLITE_DROP, "mysql": MARIADB_DROP}.get(connection.vendor, [])
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    forget(connection.alias)
