"""The packages depend one way: tracesite → traces → agents. The agent runtime imports nothing of
the web app, so it can run and be tested on its own (a list-collecting sink is enough)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # Every import statement counts, also one inside a function.
    return grimp.build_graph("agents", "traces", "tracesite", cache_dir=None)


@pytest.mark.parametrize(("lower", "upper"), [("agents", "traces"), ("agents", "tracesite"), ("traces", "tracesite")])
def test_a_lower_package_imports_nothing_of_a_higher_one(graph, lower, upper):
    chains = graph.find_shortest_chains(importer=lower, imported=upper, as_packages=True)
    assert not chains, f"{lower} reaches {upper}: " + "; ".join(" -> ".join(chain) for chain in sorted(chains))


def test_the_check_finds_an_import_that_runs_the_wrong_way(tmp_path, monkeypatch):
    """The check itself can fail: a lower package with one upward import is caught."""
    for package, body in {"low": "def f():\n    from high import thing\n", "high": "thing = 1\n"}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "mod.py").write_text(body.replace("from high import", "from high.mod import"))
    monkeypatch.syspath_prepend(str(tmp_path))
    wrong = grimp.build_graph("low", "high", cache_dir=None)
    assert wrong.find_shortest_chains(importer="low", imported="high", as_packages=True)


def test_the_agent_runtime_spells_no_import_of_the_web_app():
    """The grep of the issue, for imports grimp cannot see (strings passed to import_module)."""
    offending = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "agents").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith(("from traces", "import traces", "from tracesite", "import tracesite"))
        or 'import_module("traces' in line
    ]
    assert offending == []
