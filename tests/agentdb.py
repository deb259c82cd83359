"""Agent databases for tests: the demo shop and a second, unrelated schema, on SQLite and MariaDB."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from agents import demo
from agents.database import SqlDatabase, open_database
from tracesite import env

LIBRARY_DDL = [
    "CREATE TABLE authors (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, country VARCHAR(60) NOT NULL, born INT NOT NULL)",
    "CREATE TABLE books (id INT PRIMARY KEY, title VARCHAR(200) NOT NULL, author_id INT NOT NULL, genre VARCHAR(40) NOT NULL, "
    "pages INT NOT NULL, price DECIMAL(8,2) NOT NULL, published DATE NOT NULL)",
    "CREATE TABLE loans (id INT PRIMARY KEY, book_id INT NOT NULL, borrower VARCHAR(100) NOT NULL, branch VARCHAR(60) NOT NULL, "
    "loaned_at DATETIME NOT NULL, returned INT NOT NULL)",
]
AUTHORS = [
    (1, "Ursula Le Guin", "United States", 1929),
    (2, "Liu Cixin", "China", 1963),
    (3, "Haruki Murakami", "Japan", 1949),
    (4, "Chimamanda Adichie", "Nigeria", 1977),
    (5, "Jorge Luis Borges", "Argentina", 1899),
]
GENRES = ["scifi", "fantasy", "literary", "essay"]
BRANCHES = ["Central", "Riverside", "Hilltop"]


def library_rows() -> dict[str, list[tuple]]:
    books = [
        (
            i,
            f"Book {i:02d}",
            (i % 5) + 1,
            GENRES[i % 4],
            100 + (i * 37) % 400,
            float(f"{5 + (i * 7) % 40}.{i % 100:02d}"),
            f"{1960 + (i * 3) % 60}-{(i % 12) + 1:02d}-{(i % 27) + 1:02d}",
        )
        for i in range(1, 41)
    ]
    loans = [
        (
            i,
            (i * 7) % 40 + 1,
            ["ana", "ben", "chen", "dev", "eli"][i % 5],
            BRANCHES[i % 3],
            f"2025-{(i % 12) + 1:02d}-{(i % 27) + 1:02d} {(i * 5) % 24:02d}:{(i * 11) % 60:02d}:00",
            i % 2,
        )
        for i in range(1, 121)
    ]
    return {"authors": AUTHORS, "books": books, "loans": loans}


def fill_library(cursor, placeholder: str) -> None:
    for statement in LIBRARY_DDL:
        cursor.execute(statement)
    for table, rows in library_rows().items():
        marks = ", ".join([placeholder] * len(rows[0]))
        cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def sqlite_database(path: Path, schema: str, row_limit: int = 200, timeout: float = 5.0) -> SqlDatabase:
    conn = sqlite3.connect(path)
    with conn:
        if schema == "demo":
            demo.create(conn.cursor(), "sqlite", "?")
        else:
            fill_library(conn.cursor(), "?")
    conn.close()
    return open_database(env.sqlite_database(path), row_limit=row_limit, timeout=timeout)


def _mysql_connect(url: str, db: str | None = None):
    import MySQLdb

    parts = urlsplit(url)
    kwargs = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "passwd": parts.password or "",
        "charset": "utf8mb4",
    }
    if db:
        kwargs["db"] = db
    return MySQLdb.connect(**kwargs), parts


@contextlib.contextmanager
def mysql_database(url: str, schema: str, row_limit: int = 200, timeout: float = 5.0):
    """A throwaway MariaDB database holding ``schema``, dropped afterwards."""
    name = f"tracesite_t_{schema}_{uuid.uuid4().hex[:8]}"
    admin, parts = _mysql_connect(url)
    admin.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        conn, _ = _mysql_connect(url, name)
        cursor = conn.cursor()
        if schema == "demo":
            demo.create(cursor, "mysql", "%s")
        else:
            fill_library(cursor, "%s")
        conn.commit()
        conn.close()
        settings = env.mysql_database(
            name, parts.username or "root", parts.password or "", parts.hostname or "127.0.0.1", parts.port or 3306
        )
        yield open_database(settings, row_limit=row_limit, timeout=timeout)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()
