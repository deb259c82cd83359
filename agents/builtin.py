"""The offline built-in model: a deterministic planner that speaks the tool-calling protocol.

No key, no network. Like an LLM it only sees the conversation: it calls ``describe_schema`` to
list the tables, again to see the columns of the table the question is about, then ``run_sql``
with SQL it builds from the question and the *live* schema, then answers with a short summary
and a table. It understands these questions, in English and Chinese, over any schema:

- list tables; describe a table
- show N rows of a table (N in digits or Chinese numerals, default 10)
- count rows; count grouped by a column
- top/bottom N by a numeric column; min/max/avg/sum of a column
- rows where a column equals a value; the latest N by a date column

Table and column names are matched against the schema, with plurals and the aliases a schema
declares in comments ("aliases: 用户"). A question it cannot map gets an honest answer saying
what it can do, never invented SQL.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from agents.chat import ChatModel, Completion, TextCallback, ToolCall, Usage

CJK = re.compile(r"[\u4e00-\u9fff]")
ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
ZH_NUMBER = "零〇一二两三四五六七八九十百千"
NUMERIC_TYPES = ("int", "decimal", "numeric", "float", "double", "real", "number", "money")
DATE_TYPES = ("date", "time")  # date, datetime, timestamp, time
CAPABILITIES_EN = (
    "list the tables; describe a table; show N rows of a table; count rows; count rows grouped by a column; "
    "top or bottom N by a numeric column; the min, max, average or sum of a column; rows where a column equals "
    "a value; the latest N rows by a date column"
)
CAPABILITIES_ZH = (
    "列出所有表；查看表结构；显示某表的 N 条数据；统计行数；按某列分组计数；按数值列取前/后 N 条；"
    "某列的最小/最大/平均/总和；某列等于某值的行；按日期列取最新 N 条"
)


def zh_number(text: str) -> int | None:
    """一 → 1, 十 → 10, 十五 → 15, 二十 → 20, 一百二十 → 120."""
    if not text or any(ch not in ZH_NUMBER for ch in text):
        return None
    total, current = 0, 0
    for ch in text:
        if ch in ZH_DIGITS:
            current = ZH_DIGITS[ch]
        else:
            unit = {"十": 10, "百": 100, "千": 1000}[ch]
            total += (current or 1) * unit
            current = 0
    return total + current


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "ches", "shes")) and len(word) > 4:
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


@dataclass
class Intent:
    kind: str  # tables | describe | rows | count | group | top | aggregate | where | latest
    limit: int | None = None
    descending: bool = True
    function: str = ""  # MIN MAX AVG SUM
    group_word: str = ""
    where_word: str = ""
    where_value: str = ""


@dataclass
class SchemaTable:
    name: str
    aliases: list[str] = field(default_factory=list)
    rows: int | None = None
    columns: list[dict[str, Any]] = field(default_factory=list)


def parse_limit(question: str) -> int | None:
    q = question.lower()
    match = (
        re.search(
            r"(?:top|first|latest|last|newest|bottom|lowest|highest|cheapest|recent|show|list|display|give me|get)"
            r"\s+(\d{1,4})\b",
            q,
        )
        or re.search(r"\b(\d{1,4})\s+(?:rows?|records?|entries|items?|\w+s\b)", q)
        or re.search(r"(\d{1,4})\s*(?:条|个|名|行|位|笔|件|项|家|本)", q)
        or re.search(r"前\s*(\d{1,4})", q)
    )
    if match:
        return int(match.group(1))
    match = re.search(f"([{ZH_NUMBER}]+)\\s*(?:条|个|名|行|位|笔|件|项|家|本)", question) or re.search(
        f"前([{ZH_NUMBER}]+)", question
    )
    if match:
        return zh_number(match.group(1))
    match = re.search(r"\b(?:the|top|first)\s+(\d{1,4})\b", q)
    if match:
        return int(match.group(1))
    match = re.search(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|twenty)\b", q)
    if match:
        return (
            ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"].index(match.group(1)) + 1
            if match.group(1) != "twenty"
            else 20
        )
    return None


def parse_intent(question: str) -> Intent:
    q = question.lower().strip().rstrip("?？。.!！")
    limit = parse_limit(question)
    if re.search(
        r"\b(list|show|what|which|all)\b.*\btables\b|\btables? (are there|do you have|exist)|^tables$", q
    ) or re.search(r"哪些表|什么表|所有的?表|表名|列出.*表$|有几张表|多少张表|有哪些数据表", q):
        return Intent("tables")
    if re.search(r"\b(describe|columns|fields|structure|schema of)\b", q) or re.search(
        r"结构|字段|哪些列|列名|有什么列", q
    ):
        return Intent("describe")
    where = re.search(
        r"\bwhere\s+(?P<col>[\w ]+?)\s*(?:=|==|\bis\b|\bequals\b)\s*['\"]?(?P<val>[^'\"]+?)['\"]?$", q
    ) or re.search(r"\bwith\s+(?P<col>\w+)\s+(?:=|==|is|equal to|of)?\s*['\"]?(?P<val>[^'\"]+?)['\"]?$", q)
    if where:
        return Intent(
            "where",
            limit,
            where_word=where.group("col").strip(),
            where_value=_original_case(question, where.group("val").strip()),
        )
    zh_where = re.search(
        r"(?P<col>[\w\u4e00-\u9fff]+?)(?:是|为|等于|=)\s*['\"“‘]?(?P<val>[^'\"”’的]+?)['\"”’]?\s*的", question
    )
    if zh_where and CJK.search(question):
        return Intent("where", limit, where_word=zh_where.group("col"), where_value=zh_where.group("val").strip())
    group = re.search(
        r"\b(?:per|by|for each|each|grouped by|group by)\s+([a-z_][\w ]*?)(?:\s*$|\s+(?:in|from|of)\b)", q
    )
    counting = re.search(
        r"\bhow many\b|\bcount\b|\bnumber of\b|多少|数量|数目|计数|几个|总数|统计|[\u4e00-\u9fff]数$", q
    )
    zh_group = re.search(
        r"(?:每个|每种|每一个|各个|各|按)\s*([\w\u4e00-\u9fff]+?)(?:的|统计|分组|分别|计算|有)", question
    )
    if counting and (group or zh_group):
        found = group or zh_group
        assert found is not None
        return Intent("group", group_word=found.group(1).strip())
    if re.search(r"\b(latest|most recent|newest|recent)\b", q) or re.search(r"最近|最新", q):
        return Intent("latest", limit or 10)
    aggregates = [
        (r"\baverage\b|\bavg\b|\bmean\b|平均", "AVG"),
        (r"\bsum\b|\btotal of\b|总和|合计|总计|之和|加起来", "SUM"),
        (r"\bmaximum\b|\bmax\b|\bhighest\b|\blargest\b|\bbiggest\b|最高|最大|最多|最贵", "MAX"),
        (r"\bminimum\b|\bmin\b|\blowest\b|\bsmallest\b|\bcheapest\b|最低|最小|最少|最便宜", "MIN"),
    ]
    top = re.search(
        r"\b(top|bottom|highest|lowest|largest|smallest|cheapest|most expensive|biggest)\b", q
    ) or re.search(r"最高|最低|最大|最小|最多|最少|最贵|最便宜|前\s*\S+?(?:名|个|条)", q)
    if top and (limit or re.search(r"\b(top|bottom)\b|前", q)):
        word = top.group(0)
        ascending = bool(re.search(r"bottom|lowest|smallest|cheapest|最低|最小|最少|最便宜", word)) or bool(
            re.search(r"\b(bottom|lowest|smallest|cheapest)\b|最低|最小|最少|最便宜", q)
        )
        return Intent("top", limit or 10, descending=not ascending)
    for pattern, function in aggregates:
        if re.search(pattern, q):
            return Intent("aggregate", function=function)
    if counting:
        return Intent("count")
    return Intent("rows", limit or 10)


def _original_case(question: str, lowered: str) -> str:
    index = question.lower().rfind(lowered)
    return question[index : index + len(lowered)] if index >= 0 else lowered


class BuiltinModel(ChatModel):
    name = "builtin"
    offline = True

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        on_text: TextCallback | None = None,
    ) -> Completion:
        state = _Conversation(messages)
        action = state.next_action(tools_available=bool(tools))
        if isinstance(action, ToolCall):
            completion = Completion("", [action], model=self.name)
        else:
            completion = Completion(action, model=self.name)
            if on_text is not None:
                for piece in re.findall(r".*?\n|.+$", action):
                    await on_text(piece)
        prompt = sum(len(str(m.get("content") or "")) for m in messages)
        output = len(completion.content) + sum(len(c.arguments) for c in completion.tool_calls)
        completion.usage = Usage(
            math.ceil(prompt / 4), math.ceil(output / 4), math.ceil(prompt / 4) + math.ceil(output / 4)
        )
        completion.metadata["usage_estimated"] = True
        completion.finish_reason = "tool_calls" if completion.tool_calls else "stop"
        return completion


class _Conversation:
    """What the planner knows from the messages so far."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.question = next((m["content"] for m in messages if m["role"] == "user"), "") or ""
        self.chinese = bool(CJK.search(self.question))
        self.listing: list[SchemaTable] | None = None
        self.described: dict[str, SchemaTable] = {}
        self.query: dict[str, Any] | None = None
        self.query_sql = ""
        self.query_error = ""
        self.calls = 0
        calls: dict[str, tuple[str, dict]] = {}
        for message in messages:
            for call in message.get("tool_calls") or []:
                function = call["function"]
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    arguments = {}
                calls[call["id"]] = (function["name"], arguments)
                self.calls += 1
            if message["role"] != "tool":
                continue
            name, arguments = calls.get(message.get("tool_call_id") or "", ("", {}))
            content = message.get("content") or ""
            if content.startswith("Error:"):
                if name == "run_sql":
                    self.query_error, self.query_sql = content[len("Error:") :].strip(), arguments.get("sql", "")
                continue
            try:
                body = json.loads(content)
            except ValueError:
                continue
            if name == "describe_schema" and "tables" in body:
                self.listing = [
                    SchemaTable(t["name"], t.get("aliases") or [], t.get("estimated_rows")) for t in body["tables"]
                ]
                self.dialect = body.get("dialect", "SQLite")
            elif name == "describe_schema" and "columns" in body:
                self.described[body["table"]] = SchemaTable(
                    body["table"], body.get("aliases") or [], body.get("estimated_rows"), body["columns"]
                )
            elif name == "run_sql":
                self.query, self.query_sql, self.query_error = body, arguments.get("sql", ""), ""

    def t(self, en: str, zh: str) -> str:
        return zh if self.chinese else en

    def call(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        return ToolCall(f"call_{self.calls + 1}", name, json.dumps(arguments, ensure_ascii=False))

    # ------------------------------------------------------------------ planning

    def next_action(self, tools_available: bool) -> ToolCall | str:
        intent = parse_intent(self.question)
        if self.query is not None or self.query_error:
            return self.answer_query(intent)
        if self.listing is None:
            return self.call("describe_schema", {}) if tools_available else self.cannot()
        if intent.kind == "tables":
            return self.answer_tables()
        table = self.match_table()
        if table is None:
            return self.cannot(self.t("No table in the database matches the question.", "数据库里没有与问题对应的表。"))
        if table.name not in self.described:
            return self.call("describe_schema", {"table": table.name}) if tools_available else self.cannot()
        table = self.described[table.name]
        if intent.kind == "describe":
            return self.answer_describe(table)
        sql = self.build_sql(intent, table)
        if isinstance(sql, str) and tools_available:
            return self.call("run_sql", {"sql": sql})
        return self.cannot(sql.reason if isinstance(sql, _Unmapped) else None)

    def match_table(self) -> SchemaTable | None:
        q = self.question.lower()
        words = re.findall(r"[a-z][a-z0-9_]*", q)
        phrases = (
            set(words)
            | {singular(w) for w in words}
            | {f"{a}_{b}" for a, b in itertools.pairwise(words)}
            | {f"{a}_{singular(b)}" for a, b in itertools.pairwise(words)}
        )
        best: tuple[int, int, SchemaTable] | None = None
        for table in self.listing or []:
            names = {table.name.lower(), singular(table.name.lower())} | {a.lower() for a in table.aliases}
            for name in names:
                if CJK.search(name):
                    position = self.question.find(name)
                    hit = position >= 0
                else:
                    hit = name in phrases or singular(name) in phrases
                    position = q.find(name.split("_")[0]) if hit else -1
                if hit:
                    score = (len(name), -position)
                    if best is None or score > best[:2]:
                        best = (score[0], score[1], table)
        return best[2] if best else None

    def match_column(
        self, table: SchemaTable, word: str = "", prefer: tuple[str, ...] = (), anywhere: bool = False
    ) -> dict | None:
        """The column named by ``word`` (or, with ``anywhere``, mentioned anywhere in the question)."""
        columns = table.columns
        candidates = []
        text = (word or self.question).lower()
        words = set(re.findall(r"[a-z][a-z0-9_]*", text))
        words |= {singular(w) for w in words} | {f"{a}_{b}" for a, b in zip(sorted(words), sorted(words), strict=True)}
        spaced = re.sub(r"\s+", "_", text.strip())
        for column in columns:
            name = column["name"].lower()
            names = {name, name.removesuffix("_id"), name.replace("_", " ")} | {
                a.lower() for a in column.get("aliases") or []
            }
            for candidate in names:
                if not candidate:
                    continue
                if CJK.search(candidate):
                    hit = candidate in (word or self.question)
                elif word and not anywhere:
                    hit = (
                        candidate in {spaced, singular(spaced), text.strip(), singular(text.strip())}
                        or candidate in words
                    )
                else:
                    hit = candidate in words or (" " in candidate and candidate in text)
                if hit:
                    candidates.append((len(candidate), column))
        if prefer:
            typed = [c for c in candidates if _is_type(c[1], prefer)]
            candidates = typed or ([] if anywhere else candidates)
        if not candidates:
            return None
        return max(candidates, key=lambda c: c[0])[1]

    def build_sql(self, intent: Intent, table: SchemaTable) -> str | _Unmapped:
        name = _ident(table.name, self.dialect_vendor)
        if intent.kind == "rows":
            return f"SELECT * FROM {name} LIMIT {intent.limit}"
        if intent.kind == "count":
            return f"SELECT COUNT(*) AS row_count FROM {name}"
        if intent.kind == "group":
            column = self.match_column(table, intent.group_word)
            if column is None:
                return _Unmapped(
                    self.t(
                        f"The table {table.name} has no column matching “{intent.group_word}”.",
                        f"表 {table.name} 没有与“{intent.group_word}”对应的列。",
                    )
                )
            col = _ident(column["name"], self.dialect_vendor)
            return f"SELECT {col}, COUNT(*) AS row_count FROM {name} GROUP BY {col} ORDER BY row_count DESC, {col}"
        if intent.kind in ("top", "aggregate"):
            column = self.match_column(table, prefer=NUMERIC_TYPES, anywhere=True)
            if column is None and re.search(r"cheap|expensive|便宜|贵", self.question.lower()):
                column = next(
                    (
                        c
                        for c in table.columns
                        if re.search(r"price|cost|价", c["name"].lower() + " ".join(c.get("aliases") or []))
                    ),
                    None,
                )
            if column is None:
                return _Unmapped(
                    self.t(
                        f"I could not tell which numeric column of {table.name} the question is about.",
                        f"无法确定问题指的是表 {table.name} 的哪个数值列。",
                    )
                )
            col = _ident(column["name"], self.dialect_vendor)
            if intent.kind == "top":
                direction = "DESC" if intent.descending else "ASC"
                pk = next((c["name"] for c in table.columns if c.get("key") == "PRI"), None)
                tie = f", {_ident(pk, self.dialect_vendor)}" if pk else ""
                return f"SELECT * FROM {name} ORDER BY {col} {direction}{tie} LIMIT {intent.limit}"
            alias = f"{intent.function.lower()}_{column['name']}"
            return f"SELECT {intent.function}({col}) AS {_ident(alias, self.dialect_vendor)} FROM {name}"
        if intent.kind == "latest":
            dates = [c for c in table.columns if _is_type(c, DATE_TYPES)]
            if not dates:
                return _Unmapped(
                    self.t(
                        f"The table {table.name} has no date column to sort by.",
                        f"表 {table.name} 没有可排序的日期列。",
                    )
                )
            column = next((c for c in dates if "creat" in c["name"].lower()), dates[0])
            col = _ident(column["name"], self.dialect_vendor)
            return f"SELECT * FROM {name} ORDER BY {col} DESC LIMIT {intent.limit}"
        if intent.kind == "where":
            column = self.match_column(table, intent.where_word)
            if column is None:
                return _Unmapped(
                    self.t(
                        f"The table {table.name} has no column matching “{intent.where_word}”.",
                        f"表 {table.name} 没有与“{intent.where_word}”对应的列。",
                    )
                )
            col = _ident(column["name"], self.dialect_vendor)
            value = intent.where_value
            literal = (
                value
                if re.fullmatch(r"-?\d+(\.\d+)?", value) and _is_type(column, NUMERIC_TYPES)
                else exp.Literal.string(value).sql(dialect=self.dialect_vendor)
            )
            return f"SELECT * FROM {name} WHERE {col} = {literal} LIMIT {intent.limit or 100}"
        return _Unmapped(None)

    @property
    def dialect_vendor(self) -> str:
        return "sqlite" if getattr(self, "dialect", "SQLite") == "SQLite" else "mysql"

    # ------------------------------------------------------------------ answers

    def answer_tables(self) -> str:
        rows = [[t.name, t.rows if t.rows is not None else "", ", ".join(t.aliases)] for t in self.listing or []]
        head = self.t(f"The database has {len(rows)} tables:", f"数据库里共有 {len(rows)} 张表：")
        return f"{head}\n\n{markdown_table(['table', 'rows (estimate)', 'aliases'], rows)}"

    def answer_describe(self, table: SchemaTable) -> str:
        rows = [
            [
                c["name"],
                c["type"],
                c.get("key", ""),
                "yes" if c.get("nullable") else "no",
                ", ".join(c.get("aliases") or []),
            ]
            for c in table.columns
        ]
        head = self.t(f"Table `{table.name}` has {len(rows)} columns:", f"表 `{table.name}` 共有 {len(rows)} 列：")
        return f"{head}\n\n{markdown_table(['column', 'type', 'key', 'nullable', 'aliases'], rows)}"

    def answer_query(self, intent: Intent) -> str:
        if self.query_error:
            return self.t(
                f"The query failed, so I cannot answer from the data: {self.query_error}",
                f"查询失败，无法根据数据回答：{self.query_error}",
            )
        body = self.query or {}
        columns, rows = body.get("columns", []), body.get("rows", [])
        sql = f"\n\n```sql\n{self.query_sql}\n```" if self.query_sql else ""
        if intent.kind in ("count", "aggregate") and len(rows) == 1 and len(columns) == 1:
            value = rows[0][0]
            head = self.t(f"The answer is **{value}** ({columns[0]}).", f"结果是 **{value}**（{columns[0]}）。")
            return head + sql
        if not rows:
            return self.t("The query returned no rows.", "查询没有返回任何行。") + sql
        more = (
            self.t(" (more rows exist; only the first ones are shown)", "（结果还有更多行，这里只显示前面的部分）")
            if body.get("truncated")
            else ""
        )
        head = self.t(
            f"Here {'is' if len(rows) == 1 else 'are'} {len(rows)} row{'s' if len(rows) != 1 else ''}{more}:",
            f"共返回 {len(rows)} 行数据{more}：",
        )
        return f"{head}\n\n{markdown_table(columns, rows)}{sql}"

    def cannot(self, reason: str | None = None) -> str:
        lead = reason + " " if reason else ""
        return self.t(
            f"{lead}I am the offline built-in model and could not map this question to a query over the database, "
            f"so I will not guess. I can: {CAPABILITIES_EN}. "
            "Set OPENAI_API_KEY to use a language model for other questions.",
            f"{lead}我是离线内置模型，无法把这个问题对应到数据库查询，因此不会编造 SQL。我能做的是：{CAPABILITIES_ZH}。"
            "如需回答其他问题，请设置 OPENAI_API_KEY 使用大语言模型。",
        )


@dataclass
class _Unmapped:
    reason: str | None


def _is_type(column: dict, kinds: tuple[str, ...]) -> bool:
    return any(kind in (column.get("type") or "").lower() for kind in kinds)


def _ident(name: str, vendor: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return name
    return exp.to_identifier(name, quoted=True).sql(dialect=vendor)


def markdown_table(columns: list[str], rows: list[list[Any]], limit: int = 50) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:limit]]
    return "\n".join(lines)
