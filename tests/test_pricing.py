"""Cost comes from a per-model price table that users can extend."""

import json

import pytest

from agents.chat import Usage
from agents.pricing import PriceTable


def test_it_prices_known_models_and_dated_variants():
    table = PriceTable()
    usage = Usage(1_000_000, 1_000_000, 2_000_000)
    assert table.cost("gpt-4o-mini", usage) == pytest.approx(0.75)
    assert table.cost("gpt-4o-mini-2024-07-18", usage) == pytest.approx(0.75)  # longest prefix, not gpt-4o
    assert table.cost("gpt-4o-2024-08-06", usage) == pytest.approx(12.5)
    assert table.cost("unknown-model", usage) == 0.0
    assert table.cost("builtin", usage) == 0.0


def test_it_reads_extra_prices_from_a_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"qwen2.5:7b": {"prompt": 0.1, "completion": 0.2}, "gpt-4o": {"prompt": 1, "completion": 2}})
    )
    table = PriceTable.from_file(str(path))
    assert table.cost("qwen2.5:7b", Usage(2_000_000, 1_000_000, 3_000_000)) == pytest.approx(0.4)
    assert table.cost("gpt-4o", Usage(1_000_000, 0, 1_000_000)) == pytest.approx(1.0)  # overrides the built-in price


def test_it_names_the_file_when_it_is_malformed(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"m": {"prompt": 1}}')
    with pytest.raises(ValueError, match="AGENT_PRICES_FILE"):
        PriceTable.from_file(str(path))
