"""The demo shop the agent queries on a fresh install: deterministic, a few thousand rows.

Tables and columns declare their Chinese names in comments ("aliases: 用户"), which the
schema tool reads back, so the offline model can map 用户 → users on any schema that does the same.
"""

from __future__ import annotations

import datetime as dt
import random

from django.db import connections

TABLES = ["order_items", "orders", "products", "users"]  # drop order (children first)

COUNTRIES = [
    "China",
    "United States",
    "Germany",
    "Japan",
    "United Kingdom",
    "France",
    "Brazil",
    "India",
    "Canada",
    "Australia",
]
CITIES = {
    "China": ["Beijing", "Shanghai", "Shenzhen"],
    "United States": ["New York", "Seattle", "Austin"],
    "Germany": ["Berlin", "Munich"],
    "Japan": ["Tokyo", "Osaka"],
    "United Kingdom": ["London", "Leeds"],
    "France": ["Paris", "Lyon"],
    "Brazil": ["São Paulo", "Rio de Janeiro"],
    "India": ["Bengaluru", "Mumbai"],
    "Canada": ["Toronto", "Vancouver"],
    "Australia": ["Sydney", "Melbourne"],
}
FIRST = [
    "Alice",
    "Bob",
    "Charlie",
    "Diana",
    "Ethan",
    "Fiona",
    "George",
    "Hannah",
    "Ivan",
    "Julia",
    "Kevin",
    "Laura",
    "Mike",
    "Nina",
    "Oscar",
    "Paula",
    "Quinn",
    "Rosa",
    "Sam",
    "Tina",
    "Wei",
    "Xiao",
    "Yuki",
    "Zoe",
]
LAST = ["Smith", "Johnson", "Brown", "Wang", "Li", "Zhang", "Müller", "Tanaka", "Garcia", "Martin", "Silva", "Kumar"]
CATEGORIES = {
    "Electronics": [
        "Wireless Mouse",
        "Mechanical Keyboard",
        "USB-C Hub",
        "27-inch Monitor",
        "Noise-Cancelling Headphones",
        "Webcam HD",
        "Portable SSD 1TB",
        "Bluetooth Speaker",
    ],
    "Books": [
        "Learning SQL",
        "Python Crash Course",
        "Designing Data-Intensive Applications",
        "The Pragmatic Programmer",
        "Clean Code",
        "三体",
    ],
    "Home": ["Coffee Grinder", "Desk Lamp", "Standing Desk", "Ergonomic Chair", "Water Bottle", "Plant Pot"],
    "Clothing": ["Running Shoes", "Rain Jacket", "Wool Socks", "Denim Jeans", "Cotton T-Shirt", "Baseball Cap"],
    "Sports": ["Yoga Mat", "Dumbbell Set", "Tennis Racket", "Cycling Helmet", "Jump Rope"],
}
STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled"]

USERS, PRODUCTS, ORDERS = 300, 31, 2000


def _ddl(vendor: str) -> dict[str, str]:
    pk = "INTEGER PRIMARY KEY" if vendor == "sqlite" else "INT PRIMARY KEY"

    def comment(text: str) -> tuple[str, str]:
        # (column suffix, table suffix): MySQL keeps COMMENTs, SQLite keeps the CREATE text.
        if vendor == "mysql":
            return f" COMMENT '{text}'", f" COMMENT='{text}'"
        return f" /* {text} */", ""

    def col(text: str) -> str:
        return comment(text)[0]

    def table(name: str, text: str, body: str) -> str:
        _, table_part = comment(text)
        head = f"CREATE TABLE {name} (" + ("" if vendor == "mysql" else f" /* {text} */")
        charset = " DEFAULT CHARSET=utf8mb4" if vendor == "mysql" else ""
        return f"{head}\n{body}\n){table_part}{charset}"

    return {
        "users": table(
            "users",
            "aliases: 用户,会员,客户,user",
            f"""
  id {pk},
  name VARCHAR(100) NOT NULL{col("aliases: 姓名,名字")},
  email VARCHAR(200) NOT NULL{col("aliases: 邮箱")},
  age INT NOT NULL{col("aliases: 年龄")},
  country VARCHAR(60) NOT NULL{col("aliases: 国家")},
  city VARCHAR(60) NOT NULL{col("aliases: 城市")},
  created_at DATETIME NOT NULL{col("aliases: 注册时间,创建时间")}""",
        ),
        "products": table(
            "products",
            "aliases: 产品,商品,product",
            f"""
  id {pk},
  name VARCHAR(200) NOT NULL{col("aliases: 名称,名字")},
  category VARCHAR(60) NOT NULL{col("aliases: 类别,分类")},
  price DECIMAL(10,2) NOT NULL{col("aliases: 价格")},
  stock INT NOT NULL{col("aliases: 库存")}""",
        ),
        "orders": table(
            "orders",
            "aliases: 订单,order",
            f"""
  id {pk},
  user_id INT NOT NULL{col("aliases: 用户")},
  status VARCHAR(20) NOT NULL{col("aliases: 状态")},
  total DECIMAL(10,2) NOT NULL{col("aliases: 金额,总额,总价")},
  country VARCHAR(60) NOT NULL{col("aliases: 国家")},
  created_at DATETIME NOT NULL{col("aliases: 下单时间,创建时间,日期")},
  FOREIGN KEY (user_id) REFERENCES users(id)""",
        ),
        "order_items": table(
            "order_items",
            "aliases: 订单明细,订单项",
            f"""
  id {pk},
  order_id INT NOT NULL{col("aliases: 订单")},
  product_id INT NOT NULL{col("aliases: 产品,商品")},
  quantity INT NOT NULL{col("aliases: 数量")},
  unit_price DECIMAL(10,2) NOT NULL{col("aliases: 单价")},
  FOREIGN KEY (order_id) REFERENCES orders(id),
  FOREIGN KEY (product_id) REFERENCES products(id)""",
        ),
    }


def rows() -> dict[str, list[tuple]]:
    """The demo data; the same on every call."""
    rng = random.Random(20250924)
    start = dt.datetime(2024, 1, 1, 9, 0, 0)
    users = [
        (1, "Alice", "alice@example.com", 28, "United States", "New York", start),
        (2, "Bob", "bob@example.com", 35, "United Kingdom", "London", start + dt.timedelta(days=1)),
        (3, "Charlie", "charlie@example.com", 42, "Canada", "Toronto", start + dt.timedelta(days=2)),
    ]
    for i in range(4, USERS + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        country = rng.choice(COUNTRIES)
        users.append(
            (
                i,
                f"{first} {last}",
                f"{first.lower()}.{i}@example.com",
                rng.randint(18, 70),
                country,
                rng.choice(CITIES[country]),
                start + dt.timedelta(days=rng.randint(3, 600), minutes=rng.randint(0, 1439)),
            )
        )
    products: list[tuple[int, str, str, float, int]] = []
    for category, names in CATEGORIES.items():
        for name in names:
            products.append((len(products) + 1, name, category, round(rng.uniform(5, 600), 2), rng.randint(0, 500)))
    prices = {p[0]: p[3] for p in products}
    orders: list[tuple] = []
    items: list[tuple] = []
    for i in range(1, ORDERS + 1):
        user = users[rng.randrange(len(users))]
        created = start + dt.timedelta(days=rng.randint(0, 690), minutes=rng.randint(0, 1439))
        lines: list[tuple] = []
        for _ in range(rng.randint(1, 4)):
            product = rng.randint(1, len(products))
            quantity = rng.randint(1, 3)
            lines.append((len(items) + len(lines) + 1, i, product, quantity, prices[product]))
        total = round(sum(q * p for _, _, _, q, p in lines), 2)
        orders.append((i, user[0], rng.choice(STATUSES), total, user[4], created))
        items.extend(lines)
    return {"users": users, "products": products, "orders": orders, "order_items": items}


def existing_tables(alias: str = "agent") -> set[str]:
    with connections[alias].cursor() as cursor:
        return set(connections[alias].introspection.table_names(cursor)) & set(TABLES)


def seed(alias: str = "agent", force: bool = False) -> dict[str, int]:
    """Create and fill the demo tables. Returns rows written per table ({} if already there)."""
    connection = connections[alias]
    present = existing_tables(alias)
    if present == set(TABLES) and not force:
        return {}
    if present and not force:
        raise RuntimeError(
            f"the agent's database already has some of the demo tables ({', '.join(sorted(present))}) "
            "but not all; use --force to drop and recreate them"
        )
    with connection.cursor() as cursor:
        return create(cursor, connection.vendor, "%s", present)


def create(cursor, vendor: str, placeholder: str, present: set[str] | frozenset[str] = frozenset()) -> dict[str, int]:
    """Drop ``present`` demo tables, then create and fill all of them through a DB-API cursor."""
    data = rows()
    ddl = _ddl(vendor)
    for name in TABLES:
        if name in present:
            cursor.execute(f"DROP TABLE {name}")
    for name in reversed(TABLES):
        cursor.execute(ddl[name])
    for name in reversed(TABLES):
        table_rows = data[name]
        marks = ", ".join([placeholder] * len(table_rows[0]))
        cursor.executemany(f"INSERT INTO {name} VALUES ({marks})", table_rows)
    # Fresh statistics, so the schema shows row estimates (the agent never counts rows to list tables).
    if vendor == "mysql":
        cursor.execute(f"ANALYZE TABLE {', '.join(TABLES)}")
        cursor.fetchall()
    else:
        cursor.execute("ANALYZE")
    return {name: len(data[name]) for name in TABLES}
