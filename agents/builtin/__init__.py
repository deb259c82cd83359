"""The offline built-in model: a deterministic planner that speaks the tool-calling protocol.

No key, no network. Like an LLM it only sees the conversation: it calls ``describe_schema`` to
list the tables, again to see the columns of the table the question is about, then ``run_sql``
with SQL it builds from the question and the *live* schema, then answers with a short summary
and a table. Over any schema, in English and Chinese, it answers: list and describe tables; show
N rows; count; min/max/average/sum, overall or per group; top/bottom N (with ties if asked); the
row or group with the most or least of something; rows filtered by equality, comparisons, ranges
and periods of time; the latest N rows. Names are matched with plurals, the aliases a schema
declares in comments ("aliases: 用户"), and a bilingual vocabulary of common business words
(``agents.builtin.vocabulary``). A question it cannot map gets an honest answer saying what it
can do, never invented SQL.

The parts: ``question`` reads the question, ``schema`` matches words to tables and columns,
``planner`` writes the statement, ``answers`` words the reply.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from agents.builtin import answers
from agents.builtin.numbers import zh_number
from agents.builtin.planner import Conversation, Plan, Unfinished, Unmapped
from agents.builtin.question import Question, parse, parse_intent
from agents.chat import ChatModel, Completion, TextCallback, ToolCall, Usage

__all__ = ["BuiltinModel", "Question", "parse", "parse_intent", "zh_number"]


class BuiltinModel(ChatModel):
    name = "builtin"
    offline = True

    def __init__(self, today: dt.date | None = None) -> None:
        self.today = today  # "the last 30 days" counts back from here (default: the real today)

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        on_text: TextCallback | None = None,
    ) -> Completion:
        action = self.next_action(messages, tools_available=bool(tools))
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

    def next_action(self, messages: list[dict[str, Any]], tools_available: bool) -> ToolCall | str:
        conversation = Conversation(messages, self.today)
        step = conversation.next_step(tools_available)
        if isinstance(step, ToolCall):
            return step
        if isinstance(step, Unmapped):
            return answers.cannot(conversation, step.reason)
        if isinstance(step, Unfinished):
            return answers.unfinished(conversation)
        if isinstance(step, Plan):
            return answers.query(conversation, step)
        if step == "tables":
            return answers.tables(conversation)
        return answers.describe(conversation)
