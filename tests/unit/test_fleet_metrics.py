"""Fleet metrics: the gateway identity, [routes] counters, recording rules (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from swand.core import metrics as m
from swand.runtime.metrics import MetricsRegistry
from swand.runtime.routes import RoutesReport

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "etc" / "prometheus" / "swand-fleet-rules.yml"


def _render(selfc: m.SelfCounters) -> str:
    from swand.adapters import http_metrics

    class _Source:
        def families(self) -> list[m.Family]:
            return m.self_families(selfc)

        def scrape_took(self, seconds: float) -> None:
            pass

    return http_metrics.render(_Source()).decode()


def test_registry_counts_route_churn_and_names_the_gateway() -> None:
    reg = MetricsRegistry()
    reg.set_gateway("gw-a")
    text = _render(reg.self_counters())
    assert 'swand_gateway_info{gateway="gw-a"} 1.0' in text
    assert "swand_routes " not in text  # [routes] off: no route series at all
    reg.record_routes(RoutesReport(ok=True, routes=3, added=3))
    reg.record_routes(RoutesReport(ok=True, routes=2, removed=1), drift_repaired=True)
    reg.record_routes(RoutesReport(ok=False, error="netlink"))
    text = _render(reg.self_counters())
    assert 'swand_route_changes_total{op="add"} 3.0' in text
    assert 'swand_route_changes_total{op="remove"} 1.0' in text
    assert "swand_routes 2.0" in text  # a failed pass keeps the last count
    assert 'swand_route_reconciles_total{result="failure"} 1.0' in text
    assert "swand_route_drift_repairs_total 1.0" in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_fleet_recording_rules_check_and_compute(tmp_path: Path) -> None:
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    spec = (ROOT / "tests" / "unit" / "data" / "swand-fleet-rules-test.yml").read_text()
    test_file = tmp_path / "fleet-rules-test.yml"
    test_file.write_text(spec.replace("RULES", str(RULES)))
    out = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_fleet_row_uses_recorded_series() -> None:
    import json
    import re

    dash = json.loads((ROOT / "etc" / "grafana" / "swand-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    used = set(re.findall(r"\b[a-z]+:swand_[a-z_]+:[a-z0-9]+\b", exprs))
    recorded = set(re.findall(r"record: (\S+)", RULES.read_text()))
    assert used and used <= recorded, used - recorded
