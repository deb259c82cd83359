"""Numbers and periods of time in questions, in English and Chinese."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
ZH_NUMBER = "零〇一二两三四五六七八九十百千万"
EN_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "fifty": 50, "hundred": 100,
    "a": 1, "an": 1,
}  # fmt: skip
MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10,
    "nov": 11, "dec": 12,
}  # fmt: skip
MONTH_WORDS = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?"
    r"|nov(?:ember)?|dec(?:ember)?"
)
NUMBER = r"-?\d+(?:\.\d+)?"


def zh_number(text: str) -> int | None:
    """一 → 1, 十 → 10, 十五 → 15, 二十 → 20, 一百二十 → 120, 三万 → 30000."""
    if not text or any(ch not in ZH_NUMBER for ch in text):
        return None
    total, section, current = 0, 0, 0
    for ch in text:
        if ch in ZH_DIGITS:
            current = ZH_DIGITS[ch]
        elif ch == "万":
            total += (section + current) * 10000
            section, current = 0, 0
        else:
            section += (current or 1) * {"十": 10, "百": 100, "千": 1000}[ch]
            current = 0
    return total + section + current


def number(text: str) -> float | int | None:
    """A count or amount written in digits (``1,200``, ``3.5``, ``2k``), Chinese numerals, or words."""
    text = text.strip().lower().replace(",", "")
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*(k|千|万|m)?", text)
    if match:
        value = float(match.group(1))
        value *= {"k": 1000, "千": 1000, "万": 10000, "m": 1_000_000}.get(match.group(2) or "", 1)
        return int(value) if value == int(value) else value
    if text in EN_NUMBERS:
        return EN_NUMBERS[text]
    return zh_number(text)


@dataclass(frozen=True)
class Period:
    """A time range: ``start <= t < end``; either side may be open."""

    start: dt.date | None
    end: dt.date | None
    hint: str = ""  # the word that names the date column ("created", 注册...)

    def describe(self) -> str:
        if self.start and self.end:
            return f"from {self.start} to before {self.end}"
        return f"from {self.start}" if self.start else f"before {self.end}"


def _month_start(year: int, month: int) -> dt.date:
    """The first day of ``month`` of ``year``; months past 12 or below 1 roll over into other years."""
    return dt.date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def _span(year: int, month: int | None) -> tuple[dt.date, dt.date]:
    if month is None:
        return dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    return _month_start(year, month), _month_start(year, month + 1)


def _month(value: str | None) -> int | None:
    if not value:
        return None
    return int(value) if value.isdigit() else MONTHS.get(value.lower()[:3])


def _ago(today: dt.date, count: int, unit: str) -> dt.date:
    if unit in ("day", "天", "日"):
        return today - dt.timedelta(days=count)
    if unit in ("week", "周", "星期"):
        return today - dt.timedelta(weeks=count)
    months = count if unit in ("month", "月", "个月") else 12 * count
    years, month = divmod(today.month - 1 - months, 12)
    return dt.date(today.year + years, month + 1, min(today.day, 28))


EN_DATE_VERB = r"(?:\b(?P<hint>[a-z]+ed|born|made)\s+)?"
ZH_DATE_VERB = r"(?P<hint>注册|下单|创建|出版|入职|借出|借阅|出生|发布|购买)?"
ZH_DATE_VERB_AFTER = r"(?P<hint2>注册|下单|创建|出版|入职|借出|借阅|出生|发布|购买)?"
CALENDAR = {
    "this year": ("year", 0), "last year": ("year", 1), "this month": ("month", 0), "last month": ("month", 1),
    "今年": ("year", 0), "去年": ("year", 1), "本月": ("month", 0), "上个月": ("month", 1), "上月": ("month", 1),
}  # fmt: skip
PATTERNS = [
    # English
    (EN_DATE_VERB + rf"\b(?P<dir>after|since|from|before|until|till)\s+(?:(?P<month>{MONTH_WORDS})\s+)?"
     r"(?P<year>(?:19|20)\d\d)(?:-(?P<m>\d{1,2})(?:-(?P<d>\d{1,2}))?)?\b", "absolute"),
    (EN_DATE_VERB + rf"\b(?:in|during)\s+(?P<month>{MONTH_WORDS})\s+(?P<year>(?:19|20)\d\d)\b", "absolute"),
    (EN_DATE_VERB + r"\b(?:in|during)\s+(?:the\s+year\s+)?(?P<year>(?:19|20)\d\d)\b", "absolute"),
    (EN_DATE_VERB + r"(?<!the )\b(?P<which>this year|last year|this month|last month)\b", "calendar"),
    (EN_DATE_VERB + r"\b(?:in\s+|during\s+|over\s+|within\s+)?(?:the\s+)?(?:last|past|previous)\s+"
     r"(?P<n>\d+|[a-z]+)?\s*(?P<unit>day|week|month|year)s?\b", "relative"),
    # Chinese
    (ZH_DATE_VERB + r"(?P<year>(?:19|20)\d\d)\s*年\s*(?:(?P<month>\d{1,2})\s*月)?份?\s*"
     r"(?P<dir>之后|以后|以来|起|后|之前|以前|前)?" + ZH_DATE_VERB_AFTER, "absolute"),
    (ZH_DATE_VERB + r"(?:最近|过去|近)\s*(?P<n>\d+|[零〇一二两三四五六七八九十百]+)\s*"
     r"(?P<unit>天|日|周|星期|个月|月|年)" + ZH_DATE_VERB_AFTER, "relative"),
    (ZH_DATE_VERB + r"(?P<which>今年|去年|本月|上个月|上月)" + ZH_DATE_VERB_AFTER, "calendar"),
]  # fmt: skip


def find_period(question: str, today: dt.date) -> tuple[Period | None, str]:
    """The period a question restricts to, and the question without it."""
    for pattern, kind in PATTERNS:
        match = re.search(pattern, question, re.IGNORECASE)
        if not match:
            continue
        groups = match.groupdict()
        hint = (groups.get("hint") or groups.get("hint2") or "").lower()
        period = _period(kind, groups, today, hint)
        if period is not None:
            return period, (question[: match.start()] + " " + question[match.end() :]).strip()
    return None, question


def _period(kind: str, g: dict[str, str | None], today: dt.date, hint: str) -> Period | None:
    if kind == "absolute":
        year, month = int(g["year"] or 0), _month(g.get("m") or g.get("month"))
        if g.get("d"):  # one day: "after 2024-06-15" means from the 16th
            start = dt.date(year, month or 1, int(g["d"] or 1))
            end = start + dt.timedelta(days=1)
        else:
            start, end = _span(year, month)
        direction = (g.get("dir") or "").lower()
        if direction in ("after", "之后", "以后", "后"):
            return Period(end, None, hint)
        if direction in ("since", "from", "以来", "起"):
            return Period(start, None, hint)
        if direction in ("before", "until", "till", "之前", "以前", "前"):
            return Period(None, start, hint)
        return Period(start, end, hint)
    if kind == "relative":
        count = number(g.get("n") or "1")
        if not isinstance(count, int) or count <= 0:
            return None
        return Period(_ago(today, count, (g.get("unit") or "").lower()), None, hint)
    unit, back = CALENDAR[(g.get("which") or "").lower()]
    if unit == "year":
        return Period(*_span(today.year - back, None), hint)
    return Period(*_span(today.year, today.month - back), hint)
