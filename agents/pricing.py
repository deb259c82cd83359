"""Cost of a model call, from a per-model price table users can extend (AGENT_PRICES_FILE)."""

from __future__ import annotations

import json
from pathlib import Path

from agents.chat import Usage

# USD per 1M tokens (prompt, completion). A dated variant (gpt-4o-mini-2024-07-18) uses the
# longest listed prefix.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "deepseek-chat": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
    "builtin": (0.0, 0.0),
}


class PriceTable:
    def __init__(self, extra: dict[str, tuple[float, float]] | None = None) -> None:
        self.prices = {**PRICES, **(extra or {})}

    @classmethod
    def from_file(cls, path: str | None) -> PriceTable:
        """``{"model": {"prompt": usd_per_1m, "completion": usd_per_1m}}``."""
        if not path:
            return cls()
        try:
            raw = json.loads(Path(path).read_text())
            extra = {name: (float(p["prompt"]), float(p["completion"])) for name, p in raw.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"AGENT_PRICES_FILE {path}: expected {{model: {{prompt, completion}}}}: {exc}") from None
        return cls(extra)

    def price(self, model: str) -> tuple[float, float] | None:
        if model in self.prices:
            return self.prices[model]
        matches = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(matches, key=len)] if matches else None

    def cost(self, model: str, usage: Usage) -> float:
        price = self.price(model)
        if price is None:
            return 0.0
        return round((usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000, 8)
