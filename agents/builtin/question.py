"""What a question asks, read without the schema: the kind of answer, its parts in the asker's words.

``parse(question, today)`` returns a ``Question`` whose word slots (``measure``, ``group``,
``subject``, a filter's ``column``) are still the asker's words; the planner matches them to the
schema it inspects (``agents.builtin.planner``). English and Chinese.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from agents.builtin.numbers import EN_NUMBERS, NUMBER, ZH_NUMBER, Period, find_period, number, zh_number

CJK = re.compile(r"[\u4e00-\u9fff]")
ZH_WORD = r"[\u4e00-\u9fff\w]"
COUNTERS = "条|个|名|行|位|笔|件|项|家|本|人|张|种|类"


@dataclass
class Filter:
    column: str  # the asker's words for the column ("" when the question names none)
    op: str  # = > >= < <= between
    values: tuple[float | int | str, ...]
    implied: str = ""  # a concept a comparative implies: "cheaper than" -> price, "older than" -> age


@dataclass
class Question:
    text: str
    rest: str  # the text without its filters and period: where the table is named
    chinese: bool
    kind: str  # tables | describe | rows | count | aggregate | group | top | superlative | latest | unknown
    limit: int | None = None
    function: str = ""  # COUNT AVG SUM MIN MAX
    measure: str = ""  # words naming the measured column
    group: str = ""  # words naming the column to group by
    subject: str = ""  # superlative: "which <subject> has the most ..." / "...最多的<subject>"
    descending: bool = True
    ties: bool = False  # include every row tied with the last one
    filters: list[Filter] = field(default_factory=list)
    period: Period | None = None
    implied: str = ""  # a concept an adjective implies ("cheapest" -> price)
    extreme: str = ""  # the superlative as asked: most, highest, 最多, 最高...


# ---------------------------------------------------------------------------- limits


def parse_limit(question: str) -> int | None:
    q = question.lower()
    match = (
        re.search(
            r"(?:top|first|latest|last|newest|bottom|lowest|highest|cheapest|recent|show|list|display|give me|get)"
            r"\s+(\d{1,4})\b",
            q,
        )
        or re.search(r"\b(\d{1,4})\s+(?:rows?|records?|entries|items?|\w+s\b)", q)
        or re.search(rf"(\d{{1,4}})\s*(?:{COUNTERS})", q)
        or re.search(r"前\s*(\d{1,4})", q)
    )
    if match:
        return int(match.group(1))
    match = re.search(f"([{ZH_NUMBER}]+)\\s*(?:{COUNTERS})", question) or re.search(f"前([{ZH_NUMBER}]+)", question)
    if match:
        return zh_number(match.group(1))
    match = re.search(r"\b(?:the|top|first)\s+(\d{1,4})\b", q)
    if match:
        return int(match.group(1))
    match = re.search(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|twenty)\b", q)
    if match:
        return EN_NUMBERS[match.group(1)]
    return None


# ---------------------------------------------------------------------------- filters

EN_OPS = [
    (r"more expensive than|pricier than|costlier than", ">", "price"),
    (r"cheaper than|less expensive than", "<", "price"),
    (r"older than", ">", "age"),
    (r"younger than", "<", "age"),
    (r"longer than", ">", ""),
    (r"shorter than", "<", ""),
    (r"at least|no less than|not less than|>=|greater than or equal to", ">=", ""),
    (r"at most|no more than|not more than|<=|up to|less than or equal to", "<=", ""),
    (r"over|above|more than|greater than|higher than|larger than|bigger than|exceeding|>", ">", ""),
    (r"under|below|less than|fewer than|lower than|smaller than|<", "<", ""),
]
ZH_OPS = [
    (r"大于等于|不少于|不低于|至少|不小于", ">="),
    (r"小于等于|不超过|不高于|至多|不大于|最多不超过", "<="),
    (r"大于|超过|高于|多于|贵于", ">"),
    (r"小于|低于|少于|不到|便宜于|不足", "<"),
    (r"等于", "="),
]
NUMERIC = rf"\$?(?:{NUMBER}(?:\s*[km万千])?|[{ZH_NUMBER}]+)"
EN_COLUMN = r"(?P<col>[a-z_]+(?:\s+[a-z_]+)?)"
STOP = {"with", "where", "whose", "which", "that", "having", "a", "an", "the", "is", "are", "was", "of", "and", "at",
        "for", "all", "any", "in", "by", "total", "their", "its", "show", "list", "me", "get", "find"}  # fmt: skip


def _column_words(text: str | None) -> str:
    words = [w for w in (text or "").split() if w not in STOP]
    return " ".join(words)


def _value(text: str) -> float | int | str:
    parsed = number(text.lstrip("$"))
    return parsed if parsed is not None else text


def find_filters(text: str) -> tuple[list[Filter], str]:
    """Comparisons and ranges (``over 500``, ``between 10 and 50``, 价格大于100, 在10到50之间), and the text
    without them."""
    filters: list[Filter] = []
    lowered = text.lower()

    def take(match: re.Match[str], found: Filter) -> None:
        """Keep the filter; cut its operator and values out of the text (its column words may name the table)."""
        nonlocal text, lowered
        filters.append(found)
        start = match.end("col") if match.group("col") else match.start()
        text = text[:start] + " " + text[match.end() :]
        lowered = text.lower()

    # English ranges and comparisons
    pattern = (
        rf"(?:{EN_COLUMN}\s+)?(?:is\s+|are\s+|was\s+)?between\s+(?P<a>{NUMERIC})\s+(?:and|to|-)\s+(?P<b>{NUMERIC})"
    )
    while match := re.search(pattern, lowered):
        take(match, Filter(_column_words(match.group("col")), "between", (_value(match["a"]), _value(match["b"]))))
    for words, op, implied in EN_OPS:
        pattern = (
            rf"(?:{EN_COLUMN}\s+)?(?:is\s+|are\s+|of\s+)?\b(?:{words})\s+(?P<n>{NUMERIC})(?:\s+(?P<unit>[a-z_]+))?"
        )
        while match := re.search(pattern, lowered):
            column = _column_words(match.group("col"))
            unit = match.group("unit") or ""
            if unit in STOP or unit in {"and", "or", "rows", "results"}:
                unit = ""
            take(match, Filter(unit or column, op, (_value(match["n"]),), implied))
    # Chinese ranges and comparisons
    pattern = (
        rf"(?P<col>{ZH_WORD}+?)(?:在|介于)\s*(?P<a>{NUMERIC})\s*(?:到|至|和|与|-|~)\s*(?P<b>{NUMERIC})\s*"
        r"(?:元|块|岁|页|个|件|天)?\s*(?:之间|以内)?"
    )
    while match := re.search(pattern, text):
        take(match, Filter(match["col"], "between", (_value(match["a"]), _value(match["b"]))))
    for words, op in ZH_OPS:
        pattern = rf"(?P<col>{ZH_WORD}*?)(?:{words})\s*(?P<n>{NUMERIC})"
        while match := re.search(pattern, text):
            take(match, Filter(match["col"], op, (_value(match["n"]),)))
    return filters, text


def find_equalities(text: str, question: str) -> list[Filter]:
    """``where country is Germany``, ``with status paid``, 国家是China的."""
    q = text.lower().strip().rstrip("?？。.!！")
    match = re.search(
        r"\bwhere\s+(?P<col>[\w ]+?)\s*(?:=|==|\bis\b|\bequals\b)\s*['\"]?(?P<val>[^'\"]+?)['\"]?$", q
    ) or re.search(r"\bwith\s+(?P<col>\w+)\s+(?:=|==|is|equal to|of)?\s*['\"]?(?P<val>[^'\"]+?)['\"]?$", q)
    if (
        match
        and match["col"].strip() not in STOP
        and not re.match(rf"(?:the\s+)?(?:{SUPERLATIVE_WORDS})\b", match["val"])
    ):
        return [Filter(match["col"].strip(), "=", (_original_case(question, match["val"].strip()),))]
    match = re.search(rf"(?P<col>{ZH_WORD}+?)(?:是|为|等于|=)\s*['\"“‘]?(?P<val>[^'\"”’的]+?)['\"”’]?\s*的", text)
    if match and CJK.search(text):
        return [Filter(match["col"], "=", (_original_case(question, match["val"].strip()),))]
    return []


def _original_case(question: str, lowered: str) -> str:
    index = question.lower().rfind(lowered)
    return question[index : index + len(lowered)] if index >= 0 else lowered


# ---------------------------------------------------------------------------- functions and superlatives

EN_FUNCTIONS = [
    (r"average|avg|mean", "AVG"),
    (r"sum of|sum|total", "SUM"),
    (r"maximum|max|highest|largest|biggest|greatest", "MAX"),
    (r"minimum|min|lowest|smallest|least", "MIN"),
]
ZH_FUNCTIONS = [
    (r"平均", "AVG"),
    (r"总和|合计|总计|之和|加起来|总额|总金额|总", "SUM"),
    (r"最高|最大|最多|最贵|最长", "MAX"),
    (r"最低|最小|最少|最便宜|最短", "MIN"),
]
MOST = {"most", "highest", "largest", "biggest", "greatest", "longest", "最多", "最高", "最大", "最长", "最贵"}
LEAST = {"fewest", "least", "lowest", "smallest", "shortest", "最少", "最低", "最小", "最短", "最便宜"}
SUPERLATIVE_WORDS = "most|fewest|least|highest|lowest|largest|smallest|biggest|greatest|longest|shortest"
ZH_SUPERLATIVE = "最多|最少|最高|最低|最大|最小|最长|最短|最贵|最便宜"
ADJECTIVES = {  # "the cheapest product": direction and the concept measured
    "most expensive": (True, "price"), "priciest": (True, "price"), "cheapest": (False, "price"),
    "least expensive": (False, "price"), "oldest": (True, "age"), "youngest": (False, "age"),
    "highest paid": (True, "salary"), "highest-paid": (True, "salary"), "lowest paid": (False, "salary"),
    "best paid": (True, "salary"), "longest": (True, "duration"), "shortest": (False, "duration"),
    "最贵": (True, "price"), "最便宜": (False, "price"), "最年长": (True, "age"), "最年轻": (False, "age"),
}  # fmt: skip


def _function(text: str, chinese: bool) -> tuple[str, str]:
    """The aggregate a phrase asks for and the phrase without it: "average price" -> ("AVG", "price")."""
    for pattern, function in ZH_FUNCTIONS if chinese else EN_FUNCTIONS:
        match = re.search(rf"(?:{pattern})" if chinese else rf"\b(?:{pattern})\b", text)
        if match:
            rest = (text[: match.start()] + " " + text[match.end() :]).strip()
            return function, re.sub(r"^(?:of|the)\s+", "", rest).strip()
    return "", text.strip()


# ---------------------------------------------------------------------------- the question


def parse(question: str, today: dt.date | None = None) -> Question:
    today = today or dt.date.today()
    chinese = bool(CJK.search(question))
    q = question.lower().strip().rstrip("?？。.!！")
    ties = bool(re.search(r"\b(?:with|including|include|incl\.?)\s+ties\b|\bties included\b|并列|含并列|包括并列", q))
    q = re.sub(
        r"[,，]?\s*(?:\(|（)?(?:with|including|include)\s+ties(?:\)|）)?|(?:\(|（)?(?:含|包括)?并列(?:\)|）)?", " ", q
    )

    def make(kind: str, **fields: Any) -> Question:
        fields.setdefault("ties", ties)
        return Question(question, rest, chinese, kind, filters=filters, period=period, **fields)

    if re.search(
        r"\b(list|show|what|which|all)\b.*\btables\b|\btables? (are there|do you have|exist)|^tables$", q
    ) or re.search(r"哪些表|什么表|所有的?表|表名|列出.*表$|有几张表|多少张表|有哪些数据表", q):
        return Question(question, q, chinese, "tables")
    if re.search(r"\b(describe|columns|fields|structure|schema of)\b", q) or re.search(
        r"结构|字段|哪些列|列名|有什么列", q
    ):
        return Question(question, q, chinese, "describe")

    period, q = find_period(q, today)
    filters, q = find_filters(q)
    filters += find_equalities(q, question)
    rest = q
    limit = parse_limit(q)
    counting = re.search(
        r"\bhow many\b|\bcount\b|\bnumber of\b|多少|数量|数目|计数|几个|几位|几名|总数|统计|[\u4e00-\u9fff]数$", q
    )

    # Superlatives over groups, or the extreme row: "which country has the most users",
    # "the category with the highest average price", "the most expensive product", 订单最多的国家.
    if not limit:
        for pattern in (
            rf"\b(?:which|what)\s+(?P<subject>[a-z_][\w ]*?)\s+(?:has|have|had|gets?|got|sees?|is|was|are)\s+"
            rf"(?:the\s+)?(?P<dir>{SUPERLATIVE_WORDS})\b\s*(?P<measure>[\w ]*)",
            rf"\bthe\s+(?P<subject>[a-z_][\w ]*?)\s+with\s+the\s+(?P<dir>{SUPERLATIVE_WORDS})\b\s*(?P<measure>[\w ]*)",
            rf"哪(?:一个|个|些|种|位|家|类)(?P<subject>[^的\s]+?)的(?P<measure>{ZH_WORD}*?)(?P<dir>{ZH_SUPERLATIVE})",
            rf"(?P<measure>{ZH_WORD}*?)(?P<dir>{ZH_SUPERLATIVE})的(?P<subject>{ZH_WORD}+)",
        ):
            match = re.search(pattern, q)
            if match:
                function, _ = _function(match["measure"], chinese)
                direction = match["dir"]
                if not function and direction in ADJECTIVES:  # 最贵的商品
                    descending, implied = ADJECTIVES[direction]
                    return make("superlative", subject=match["subject"], descending=descending, implied=implied,
                                extreme=direction)  # fmt: skip
                return make("superlative", subject=match["subject"], measure=match["measure"].strip(),
                            function=function, descending=direction in MOST, extreme=direction)  # fmt: skip
        for adjective, (descending, implied) in ADJECTIVES.items():
            match = (
                re.search(rf"(?:\bthe\s+)?\b{adjective}\s+(?P<subject>[a-z_][\w ]*)", q)
                if not CJK.search(adjective)
                else (re.search(rf"{adjective}的(?P<subject>{ZH_WORD}+)", q))
            )
            if match and not limit:
                return make("superlative", subject=match["subject"], descending=descending, implied=implied,
                            extreme=adjective)  # fmt: skip

    # Aggregates per group: "average price by category", 每个国家的订单总额, "how many orders per country".
    group = re.search(
        r"\b(?:per|by|for each|for every|in each|of each|each|grouped by|group by|across)\s+(?P<group>[a-z_][\w ]*?)"
        r"(?:\s*$|\s+(?:in|from|of|for)\b)",
        q,
    )
    zh_group = re.search(
        rf"(?:每个|每种|每一个|每家|每位|各个|各|按|按照)\s*(?P<group>{ZH_WORD}+?)(?:的|统计|分组|分别|计算|有|来)", q
    )
    found = group or zh_group
    if found:
        text = q[: found.start()] + " " + q[found.end() :]
        rest = text  # "how many books per author": the books are counted, the authors group them
        function, _ = _function(text, chinese)
        if function:
            return make("group", function=function, measure=text.strip(), group=found["group"].strip())
        if counting:
            return make("group", function="COUNT", group=found["group"].strip())
        rest = q

    if re.search(r"\b(latest|most recent|newest|recent)\b", q) or re.search(r"最近|最新", q):
        return make("latest", limit=limit or 10)
    adjective = next((a for a in ADJECTIVES if re.search(rf"\b{a}\b" if not CJK.search(a) else a, q)), "")
    top = re.search(r"\b(top|bottom|highest|lowest|largest|smallest|biggest)\b", q) or re.search(
        r"最高|最低|最大|最小|最多|最少|前\s*\S+?(?:名|个|条)", q
    )
    if (top or adjective) and (limit or re.search(r"\b(top|bottom)\b|前", q)):
        if adjective:
            descending, implied = ADJECTIVES[adjective]
        else:
            descending, implied = not re.search(r"\b(bottom|lowest|smallest)\b|最低|最小|最少", q), ""
        return make("top", limit=limit or 10, descending=descending, implied=implied, measure=q)
    function, _ = _function(q, chinese)
    if function and not counting:
        return make("aggregate", function=function, measure=q)
    if counting:
        return make("count")
    if re.search(
        r"^\s*(?:which|who|whom|why|when|how)\b|\b(?:most|least|best|worst|fewest)\b|哪|谁|为什么|怎么|如何|最", q
    ):
        return make("unknown")  # it asks something these forms do not cover: never answer it with rows
    return make("rows", limit=limit or (100 if filters or period else 10))


def parse_intent(question: str) -> Question:
    """``parse`` for today: what the planner sees."""
    return parse(question)
