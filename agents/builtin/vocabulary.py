"""Words for things databases hold, in English and Chinese, for schemas that declare no aliases.

Each concept groups the names a table or column may have and the words people use for it. A
table named ``employees`` with no comments is then found by 员工, a column ``amount`` by 金额,
``department_id`` by 部门. A schema's own aliases (``COMMENT 'aliases: 用户'``) come first; these
are the fallback.
"""

from __future__ import annotations

import re

CJK = re.compile(r"[\u4e00-\u9fff]")

CONCEPTS: list[tuple[str, ...]] = [
    # people and organisations
    ("user", "users", "member", "members", "account", "accounts", "用户", "会员", "账户", "账号"),
    ("customer", "customers", "client", "clients", "buyer", "buyers", "客户", "顾客", "买家"),
    ("employee", "employees", "staff", "worker", "workers", "emp", "员工", "雇员", "职员"),
    ("department", "departments", "dept", "depts", "division", "部门"),
    ("manager", "managers", "经理", "主管"),
    ("supplier", "suppliers", "vendor", "vendors", "供应商"),
    ("author", "authors", "writer", "writers", "作者"),
    ("student", "students", "学生"),
    ("teacher", "teachers", "老师", "教师"),
    # things and events
    ("order", "orders", "purchase", "purchases", "订单"),
    ("order_item", "order_items", "order_line", "order_lines", "line_item", "line_items", "订单明细", "订单项"),
    ("product", "products", "item", "items", "goods", "sku", "产品", "商品", "货品"),
    ("book", "books", "书", "图书", "书籍"),
    ("loan", "loans", "borrowing", "borrowings", "借阅", "借书", "借出"),
    ("payment", "payments", "付款", "支付"),
    ("invoice", "invoices", "发票"),
    ("project", "projects", "项目"),
    ("course", "courses", "课程"),
    ("event", "events", "事件"),
    ("visit", "visits", "page_view", "page_views", "访问", "浏览"),
    # places and groupings
    ("country", "countries", "nation", "国家"),
    ("city", "cities", "town", "城市"),
    ("region", "regions", "area", "province", "state_name", "地区", "区域", "省份"),
    ("branch", "branches", "store", "stores", "shop", "shops", "outlet", "分店", "分馆", "门店", "网点"),
    ("warehouse", "warehouses", "仓库"),
    (
        "category",
        "categories",
        "genre",
        "genres",
        "type",
        "kind",
        "class",
        "类别",
        "分类",
        "类型",
        "种类",
        "体裁",
        "品类",
    ),
    ("status", "state", "状态"),
    ("title", "job_title", "position", "role", "职位", "岗位", "头衔"),
    # attributes
    ("name", "full_name", "first_name", "label", "姓名", "名字", "名称"),
    ("age", "年龄"),
    ("gender", "sex", "性别"),
    ("email", "mail", "邮箱", "邮件"),
    ("phone", "telephone", "mobile", "电话", "手机"),
    ("address", "地址"),
    # measures
    ("price", "unit_price", "list_price", "价格", "单价", "价钱", "售价"),
    ("amount", "total", "total_amount", "order_total", "金额", "总额", "总价", "总金额"),
    ("cost", "costs", "成本", "花费", "费用"),
    ("quantity", "qty", "units", "数量", "件数"),
    ("stock", "inventory", "on_hand", "库存"),
    ("salary", "salaries", "wage", "wages", "pay", "薪水", "工资", "薪资", "薪酬"),
    ("budget", "budgets", "预算"),
    ("revenue", "sales", "income", "收入", "销售额", "营收", "营业额"),
    ("profit", "profits", "margin", "利润"),
    ("score", "scores", "rating", "ratings", "grade", "得分", "分数", "评分", "成绩"),
    ("pages", "page_count", "页数"),
    ("duration", "duration_ms", "time_spent", "时长", "耗时"),
    ("discount", "折扣"),
    # dates
    (
        "created_at",
        "created",
        "creation",
        "signup",
        "signed_up",
        "registered",
        "joined",
        "创建时间",
        "注册时间",
        "注册",
    ),
    ("date", "day", "日期", "时间"),
    ("order_date", "ordered_at", "purchased_at", "下单时间", "下单日期", "订购日期"),
    ("born", "birth", "birthday", "birth_date", "date_of_birth", "出生", "生日"),
    ("published", "publication", "published_at", "出版"),
    ("hired", "hire_date", "hired_at", "joined_at", "start_date", "入职", "入职时间", "入职日期"),
    ("loaned_at", "borrowed_at", "借出时间", "借阅时间"),
]

# word -> the concepts it belongs to
_INDEX: dict[str, list[tuple[str, ...]]] = {}
for _concept in CONCEPTS:
    for _word in _concept:
        _INDEX.setdefault(_word, []).append(_concept)


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "ches", "shes")) and len(word) > 4:
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def own_names(name: str, aliases: list[str]) -> set[str]:
    """What a table or column is called by itself: its name, singular, without ``_id``, spaced, its aliases."""
    lowered = name.lower()
    names = {lowered, singular(lowered)}
    if lowered.endswith("_id") and len(lowered) > 3:
        names.add(lowered[:-3])
    names |= {n.replace("_", " ") for n in list(names) if "_" in n}
    names |= {a.strip().lower() for a in aliases if a.strip()}
    return {n for n in names if n}


def related_words(names: set[str]) -> set[str]:
    """The words of every concept one of ``names`` belongs to (underscored names also by their last part)."""
    words: set[str] = set()
    for name in names:
        keys = {name, name.replace(" ", "_")}
        if "_" in name:
            keys.add(name.rsplit("_", 1)[-1])
        for key in keys:
            for concept in _INDEX.get(key, []):
                words.update(concept)
    return words | {w.replace("_", " ") for w in words if "_" in w}
