"""The built-in model's answers: a sentence, the rows as a markdown table, and the SQL it ran."""

from __future__ import annotations

from typing import Any

from agents.builtin.planner import Conversation, Plan

CAPABILITIES_EN = (
    "list the tables; describe a table; show N rows; count rows; the min, max, average or sum of a column, overall "
    'or per group ("average price by category"); top or bottom N, with ties if asked; the row or group with the '
    'most or least of something ("which country has the most users"); rows where a column equals a value or is '
    'above, below or between numbers; rows in a period ("in 2025", "after March 2024", "in the last 30 days"); '
    "the latest N rows"
)
CAPABILITIES_ZH = (
    "列出所有表；查看表结构；显示 N 条数据；统计行数；某列的最小/最大/平均/总和（整体或按组，如“每个类别的平均价格”）；"
    "取前/后 N 条（可含并列）；某项最多/最少的行或分组（如“哪个国家的用户最多”）；按等于、大于、小于、区间筛选；"
    "按时间段筛选（如“2025年”“2024年3月之后”“最近30天”）；最新的 N 条"
)


def markdown_table(columns: list[str], rows: list[list[Any]], limit: int = 50) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:limit]]
    return "\n".join(lines)


def tables(c: Conversation) -> str:
    rows = [[t.name, t.estimated_rows if t.estimated_rows is not None else "", ", ".join(t.aliases)]
            for t in c.schema.tables.values()]  # fmt: skip
    head = c.t(f"The database has {len(rows)} tables:", f"数据库里共有 {len(rows)} 张表：")
    return f"{head}\n\n{markdown_table(['table', 'rows (estimate)', 'aliases'], rows)}"


def describe(c: Conversation) -> str:
    table = c.main_table()
    assert table is not None and table.columns is not None
    rows = [
        [col.name, col.type, col.key, "yes" if col.nullable else "no", ", ".join(col.aliases)] for col in table.columns
    ]
    head = c.t(f"Table `{table.name}` has {len(rows)} columns:", f"表 `{table.name}` 共有 {len(rows)} 列：")
    return f"{head}\n\n{markdown_table(['column', 'type', 'key', 'nullable', 'aliases'], rows)}"


def query(c: Conversation, plan: Plan) -> str:
    if c.query_error:
        return c.t(
            f"The query failed, so I cannot answer from the data: {c.query_error}",
            f"查询失败，无法根据数据回答：{c.query_error}",
        )
    body = c.query or {}
    columns, rows = body.get("columns", []), body.get("rows", [])
    sql = f"\n\n```sql\n{c.query_sql}\n```" if c.query_sql else ""
    kind = plan.question.kind
    if kind in ("count", "aggregate") and len(rows) == 1 and len(columns) == 1:
        value = _number(rows[0][0])
        return c.t(f"The answer is **{value}** ({columns[0]}).", f"结果是 **{value}**（{columns[0]}）。") + sql
    if not rows:
        return c.t("The query returned no rows.", "查询没有返回任何行。") + sql
    more = (
        c.t(" (more rows exist; only the first ones are shown)", "（结果还有更多行，这里只显示前面的部分）")
        if body.get("truncated")
        else ""
    )
    if kind == "superlative" and len(rows) > 1:
        head = c.t(f"{len(rows)} rows tie{more}:", f"有 {len(rows)} 行并列{more}：")
    elif kind == "top" and plan.question.ties and plan.question.limit is not None and len(rows) > plan.question.limit:
        extra = len(rows) - plan.question.limit
        head = c.t(
            f"The top {plan.question.limit}, and {extra} more tied with the last{more}:",
            f"前 {plan.question.limit} 名，另有 {extra} 行与最后一名并列{more}：",
        )
    else:
        head = c.t(
            f"Here {'is' if len(rows) == 1 else 'are'} {len(rows)} row{'s' if len(rows) != 1 else ''}{more}:",
            f"共返回 {len(rows)} 行数据{more}：",
        )
    table = markdown_table(columns, [[_number(v) for v in row] for row in rows])
    return f"{head}\n\n{table}{sql}"


def cannot(c: Conversation, reason: str | None = None) -> str:
    lead = reason + " " if reason else ""
    return c.t(
        f"{lead}I am the offline built-in model and could not map this question to a query over the database, "
        f"so I will not guess. I can: {CAPABILITIES_EN}. "
        "Set OPENAI_API_KEY to use a language model for other questions.",
        f"{lead}我是离线内置模型，无法把这个问题对应到数据库查询，因此不会编造 SQL。我能做的是：{CAPABILITIES_ZH}。"
        "如需回答其他问题，请设置 OPENAI_API_KEY 使用大语言模型。",
    )


def unfinished(c: Conversation) -> str:
    """The answer at the step limit when the query had not run yet: nothing from the data, and why."""
    return c.t(
        "I reached the step limit before I could query the database, so I have no answer from the data. "
        "Allow more steps to let me finish.",
        "在查询数据库之前已达到步数上限，因此无法根据数据回答。请允许更多步数后再试。",
    )


def _number(value: Any) -> Any:
    """Averages come back as long floats (3098082.8100000042): two decimals are enough to read."""
    if isinstance(value, float) and value != int(value):
        return round(value, 2)
    return value
