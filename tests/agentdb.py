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


# A third schema with English names and no alias comments: Chinese questions reach it only
# through the built-in model's vocabulary (员工, 部门, 客户, 订单, 产品, 金额, 价格, 日期).
COMPANY_DDL = [
    "CREATE TABLE departments (id INT PRIMARY KEY, name VARCHAR(60) NOT NULL, budget DECIMAL(12,2) NOT NULL, "
    "city VARCHAR(60) NOT NULL)",
    "CREATE TABLE employees (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, department_id INT NOT NULL, "
    "title VARCHAR(60) NOT NULL, salary DECIMAL(10,2) NOT NULL, hired_at DATE NOT NULL, city VARCHAR(60) NOT NULL, "
    "FOREIGN KEY (department_id) REFERENCES departments(id))",
    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, country VARCHAR(60) NOT NULL, "
    "signup_date DATE NOT NULL)",
    "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, category VARCHAR(40) NOT NULL, "
    "price DECIMAL(8,2) NOT NULL)",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT NOT NULL, product_id INT NOT NULL, quantity INT NOT NULL, "
    "amount DECIMAL(10,2) NOT NULL, order_date DATE NOT NULL, status VARCHAR(20) NOT NULL, "
    "FOREIGN KEY (customer_id) REFERENCES customers(id), FOREIGN KEY (product_id) REFERENCES products(id))",
]
DEPARTMENTS = [(1, "Engineering", 900000, "Berlin"), (2, "Sales", 400000, "London"), (3, "Support", 250000, "Lisbon"),
               (4, "Finance", 300000, "London")]  # fmt: skip
TITLES = ["Engineer", "Manager", "Analyst", "Associate"]
CUSTOMER_COUNTRIES = ["Germany", "France", "Spain", "Italy", "Poland"]
CATEGORIES = ["hardware", "software", "services"]


def company_rows() -> dict[str, list[tuple]]:
    employees = [
        (i, f"Employee {i:02d}", 1 + (i * 3) % 4, TITLES[i % 4], 30000 + (i * 1375) % 50000,
         f"{2019 + i % 6}-{(i % 12) + 1:02d}-{(i % 27) + 1:02d}", ["Berlin", "London", "Lisbon"][i % 3])
        for i in range(1, 61)
    ]  # fmt: skip
    customers = [(i, f"Customer {i:02d}", CUSTOMER_COUNTRIES[(i * 7) % 5], f"{2022 + i % 4}-{(i % 12) + 1:02d}-15")
                 for i in range(1, 41)]  # fmt: skip
    products = [(i, f"Product {i:02d}", CATEGORIES[i % 3], float(f"{10 + (i * 13) % 90}.{(i * 7) % 100:02d}"))
                for i in range(1, 25)]  # fmt: skip
    orders = []
    for i in range(1, 201):
        product = 1 + (i * 5) % 24
        quantity = 1 + i % 4
        amount = round(quantity * products[product - 1][3], 2)
        orders.append((i, 1 + (i * 11) % 40, product, quantity, amount,
                       f"{2024 + i % 2}-{(i % 12) + 1:02d}-{(i % 28) + 1:02d}", ["open", "paid", "shipped"][i % 3]))  # fmt: skip
    return {"departments": DEPARTMENTS, "employees": employees, "customers": customers, "products": products,
            "orders": orders}  # fmt: skip


def fill_company(cursor, placeholder: str) -> None:
    for statement in COMPANY_DDL:
        cursor.execute(statement)
    for table, rows in company_rows().items():
        marks = ", ".join([placeholder] * len(rows[0]))
        cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def fill_notes(cursor, placeholder: str) -> None:
    """Rows whose values are long: what the caps on one result are for."""
    cursor.execute("CREATE TABLE notes (id INT PRIMARY KEY, title VARCHAR(100) NOT NULL, body TEXT NOT NULL)")
    rows = [(i, f"note {i}", f"{i}:" + "lorem ipsum " * 5000) for i in range(1, 41)]  # 60,000 characters each
    cursor.executemany(f"INSERT INTO notes VALUES ({placeholder}, {placeholder}, {placeholder})", rows)


def fill_library(cursor, placeholder: str) -> None:
    for statement in LIBRARY_DDL:
        cursor.execute(statement)
    for table, rows in library_rows().items():
        marks = ", ".join([placeholder] * len(rows[0]))
        cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def sqlite_database(path: Path, schema: str, row_limit: int = 200, timeout: float = 5.0, **options) -> SqlDatabase:
    conn = sqlite3.connect(path)
    with conn:
        if schema == "demo":
            demo.create(conn.cursor(), "sqlite", "?")
        elif schema == "company":
            fill_company(conn.cursor(), "?")
        elif schema == "notes":
            fill_notes(conn.cursor(), "?")
        else:
            fill_library(conn.cursor(), "?")
    conn.close()
    return open_database(env.sqlite_database(path), row_limit=row_limit, timeout=timeout, **options)


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
def mysql_database(url: str, schema: str, row_limit: int = 200, timeout: float = 5.0, **options):
    """A throwaway MariaDB database holding ``schema``, dropped afterwards."""
    name = f"tracesite_t_{schema}_{uuid.uuid4().hex[:8]}"
    admin, parts = _mysql_connect(url)
    admin.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        conn, _ = _mysql_connect(url, name)
        cursor = conn.cursor()
        if schema == "demo":
            demo.create(cursor, "mysql", "%s")
        elif schema == "company":
            fill_company(cursor, "%s")
        elif schema == "notes":
            fill_notes(cursor, "%s")
        else:
            fill_library(cursor, "%s")
        conn.commit()
        conn.close()
        settings = env.mysql_database(
            name, parts.username or "root", parts.password or "", parts.hostname or "127.0.0.1", parts.port or 3306
        )
        yield open_database(settings, row_limit=row_limit, timeout=timeout, **options)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()
