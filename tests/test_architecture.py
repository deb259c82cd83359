"""The packages depend one way: tracesite → evals → traces → agents. The agent runtime imports nothing of
the web app, so it can run and be tested on its own (a list-collecting sink is enough). Inside
traces/, the parts are layers too (entry points → runtime → ingest | live → store → models and
vocabulary), with no cycles."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # Every import statement counts, also one inside a function.
    return grimp.build_graph("agents", "traces", "evals", "tracesite", cache_dir=None)


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("agents", "traces"),
        ("agents", "evals"),
        ("agents", "tracesite"),
        ("traces", "evals"),
        ("traces", "tracesite"),
        ("evals", "tracesite"),
    ],
)
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


# Inside traces/, highest first: the entry points (the socket, the OTLP endpoint, the pages, the
# admin, the commands), the runtime that owns a process's life, live delivery and ingest (neither
# knows the other), the store, and the vocabulary and models everything shares.
TRACES_LAYERS = [
    grimp.Layer(
        "consumers",
        "receiver",
        "api",
        "pages",
        "routing",
        "urls",
        "admin",
        "management",
        "templatetags",
        independent=False,
    ),
    "runtime",
    grimp.Layer("ingest", "live", independent=True),
    "store",
    grimp.Layer(
        "models",
        "scores",
        "protocol",
        "access",
        "security",
        "proxies",
        "compat",
        "checks",
        "loops",
        "metrics",
        "gctune",
        "apps",
        "search_index",
        independent=False,
    ),
]


def test_traces_reads_as_layers_with_no_cycles(graph):
    illegal = graph.find_illegal_dependencies_for_layers(TRACES_LAYERS, containers={"traces"})
    assert not illegal, "; ".join(
        f"{d.importer} imports {d.imported}: "
        + " | ".join(" -> ".join([*r.heads, *r.middle, *r.tails]) for r in d.routes)
        for d in illegal
    )
    listed = {
        name for layer in TRACES_LAYERS for name in (layer.module_tails if isinstance(layer, grimp.Layer) else {layer})
    }
    children = {module.removeprefix("traces.") for module in graph.find_children("traces")}
    assert children - listed == {"migrations"}, "a module of traces/ that no layer names"


def test_the_layer_check_finds_an_import_that_runs_up(tmp_path, monkeypatch):
    """The check itself can fail: the store importing the runtime is caught."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "store.py").write_text("def f():\n    from app.runtime import thing\n")
    (tmp_path / "app" / "runtime.py").write_text("thing = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    wrong = grimp.build_graph("app", cache_dir=None)
    assert wrong.find_illegal_dependencies_for_layers(["runtime", "store"], containers={"app"})
