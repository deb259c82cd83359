"""LLM-as-judge: a model rates an answer against its question and the expected answer, on a rubric.

The judge is an agent of its own with no tools and one step (``JudgeAgent``), so its call is run,
recorded and shown like any other: a trace whose answer is the verdict, as JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from agents.chat import ChatModel
from agents.loop import Agent

RUBRIC = """\
You grade the answer a data assistant gave to a question about a shop's database.
Compare the answer with the expected answer (the facts a right answer holds), not its wording.
Score from 1 to 5:
5 - right and complete: every fact of the expected answer is there, nothing wrong is added;
4 - right, with a small omission or an unimportant extra;
3 - partly right: some expected facts, or right facts with a wrong one;
2 - mostly wrong, or it does not answer the question asked;
1 - wrong, empty, or a refusal.
Reply with JSON only, on one line: {"score": <1-5>, "reason": "<one sentence>"}"""

MAX_SCORE = 5


@dataclass(frozen=True)
class JudgeVerdict:
    score: int  # 1 to 5, as the rubric says
    reason: str

    @property
    def value(self) -> float:
        """The score on 0 to 1 (1 → 0.0, 5 → 1.0), as it is recorded."""
        return (self.score - 1) / (MAX_SCORE - 1)


class JudgeAgent(Agent):
    name = "judge"


def judge_agent(model: ChatModel) -> JudgeAgent:
    return JudgeAgent(model, [], max_steps=1, system_prompt=RUBRIC)


def judge_question(question: str, answer: str, expected: str) -> str:
    """What the judge is asked: the question, the expected answer (or none), the answer to grade."""
    return (
        f"Question:\n{question}\n\n"
        f"Expected answer:\n{expected or '(none given: judge whether the answer answers the question)'}\n\n"
        f"Answer to grade:\n{answer or '(empty)'}"
    )


def parse_verdict(text: str) -> JudgeVerdict:
    """The verdict in the judge's reply (its JSON object, wherever it is), or ValueError."""
    match = re.search(r"\{.*\}", text or "", re.S)
    if match is None:
        raise ValueError("the judge's reply holds no JSON object")
    try:
        reply = json.loads(match.group(0))
    except ValueError:
        raise ValueError("the judge's reply is not valid JSON") from None
    score = reply.get("score") if isinstance(reply, dict) else None
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= MAX_SCORE:
        raise ValueError(f"the judge's score is not a whole number from 1 to {MAX_SCORE}")
    return JudgeVerdict(score, str(reply.get("reason") or "")[:1000])
