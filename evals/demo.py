"""The demo shop's dataset, ``demo-shop``: questions in English and Chinese with the SQL whose
result a right answer gives (written independently of any agent), and a few expected answers."""

from __future__ import annotations

from evals.datasets import Item, add_items
from evals.models import Dataset

NAME = "demo-shop"
DESCRIPTION = "Questions over the demo shop (seeddemo), in English and Chinese, with the SQL that answers each."

ITEMS = [
    Item("how many users are there?", "SELECT COUNT(*) FROM users"),
    Item("how many orders are there?", "SELECT COUNT(id) FROM orders"),
    Item("总共有多少个订单？", "SELECT COUNT(*) AS n FROM orders"),
    Item("有多少个商品？", "SELECT COUNT(*) FROM products"),
    Item("how many order items are there?", "SELECT COUNT(*) FROM order_items"),
    Item("how many orders per country?", "SELECT country, COUNT(*) FROM orders GROUP BY country ORDER BY country"),
    Item("每个国家有多少用户？", "SELECT country, COUNT(*) FROM users GROUP BY country"),
    Item("how many users per city?", "SELECT city, COUNT(*) AS users FROM users GROUP BY city"),
    Item("how many products per category?", "SELECT category, COUNT(*) FROM products GROUP BY category"),
    Item("what is the average price of products?", "SELECT AVG(price) FROM products"),
    Item("平均商品价格是多少？", "SELECT AVG(price) FROM products"),
    Item("what is the total amount of all orders?", "SELECT SUM(total) FROM orders"),
    Item("what is the maximum order amount?", "SELECT MAX(total) FROM orders"),
    Item("show the 5 most expensive products", "SELECT * FROM products ORDER BY price DESC, id LIMIT 5"),
    Item("最贵的5个商品", "SELECT * FROM products ORDER BY price DESC, id LIMIT 5"),
    Item("list the 3 cheapest products", "SELECT * FROM products ORDER BY price, id LIMIT 3"),
    Item(
        "which product has the highest price?", "SELECT * FROM products WHERE price = (SELECT MAX(price) FROM products)"
    ),
    Item(
        "which country has the most users?",
        "SELECT country, COUNT(*) FROM users GROUP BY country ORDER BY COUNT(*) DESC LIMIT 1",
        expected_answer="Canada",
    ),
    Item("show 10 users", "SELECT * FROM users ORDER BY id LIMIT 10"),
    Item("显示用户表的10条用户数据", "SELECT * FROM users ORDER BY id LIMIT 10"),
]


def seed_dataset() -> int:
    """Create ``demo-shop`` (nobody's) unless it exists; the number of items created."""
    if Dataset.objects.named(NAME, None).exists():
        return 0
    add_items(NAME, None, ITEMS, DESCRIPTION)
    return len(ITEMS)
