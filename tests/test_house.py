"""The house rules, checked: every module imports on its own, imports point one way
(no cycles, ``metrics`` never imports Slack or ``bot``), ``bot`` writes nothing to the
database itself (every write is a function of ``metrics``), and the KPI registry is
where facts about a KPI live."""
from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CYCLES_TOOL = ROOT.parent / "shared" / "tools" / "import_cycles.py"


def modules() -> list[str]:
    out = []
    for pkg in ("bot", "metrics"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out.append(name.removesuffix(".__init__"))
    return out


def test_every_module_imports_on_its_own():
    """Each module in a fresh interpreter: an import that works only after another
    module was loaded first is a hidden cycle."""
    def one(name: str):
        r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                           capture_output=True, text=True)
        return name, r.returncode, r.stderr[-600:]
    with ThreadPoolExecutor(2) as pool:
        failed = [(n, err) for n, rc, err in pool.map(one, modules()) if rc]
    assert not failed, failed


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module named by an import in ``path`` (inside functions too), with levels."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def test_metrics_never_imports_slack_or_bot():
    for path in (ROOT / "metrics").rglob("*.py"):
        for name, level in _imports(path):
            top = name.split(".")[0]
            assert level or top not in ("slack_bolt", "slack_sdk", "bot", "apscheduler"), \
                (path.name, name)


def test_no_import_cycles():
    if not CYCLES_TOOL.is_file():
        pytest.skip("../shared/tools/import_cycles.py is not beside this clone")
    r = subprocess.run([sys.executable, str(CYCLES_TOOL)], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout


def test_bot_runs_no_sql_of_its_own():
    """Reads and writes are functions of ``metrics`` (the store, the outbox, alerts,
    digests, the importer); ``bot`` only calls them."""
    for path in (ROOT / "bot").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("execute", "executemany",
                                                                 "executescript"):
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} runs SQL")


def test_facts_about_a_kpi_live_in_the_registry():
    """No module outside the registry tests a KPI's name to decide how to treat it."""
    from metrics import kpis
    names = set(kpis.all_names())
    for pkg in ("bot", "metrics"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "kpis.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare) and any(
                        isinstance(c, ast.Constant) and c.value in names
                        for c in [node.left, *node.comparators]):
                    pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} tests a KPI by name")
    roi = kpis.REGISTRY["sms"]["roi"]
    assert (roi.numerator_unit, roi.denominator_unit, roi.proportion) == ("money", "money", False)
    ctr = kpis.REGISTRY["sms"]["ctr"]
    assert (ctr.numerator_unit, ctr.denominator_unit, ctr.proportion) == ("count", "count", True)
    assert kpis.REGISTRY["call"]["abandonment_rate"].proportion
    assert not kpis.REGISTRY["sms"]["list_growth_rate"].proportion
    assert kpis.REGISTRY["sms"]["opt_out_rate"].volume({"delivered": 7, "sent": 9}) == 7
    assert kpis.REGISTRY["sms"]["revenue"].volume({"delivered": 7, "sent": 9}) == 9
