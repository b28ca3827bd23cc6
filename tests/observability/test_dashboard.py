"""deploy/grafana: the dashboard queries only metrics the daemon exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mcp_oauthd.observability.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mcp-oauthd-dashboard.json"
METRIC = re.compile(r"\b((?:oauth|storage|provider)_[a-z_]+)\b")


def queries(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [q for value in node.values() for q in queries(value)]
    if isinstance(node, list):
        return [q for value in node for q in queries(value)]
    return []


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in Metrics(process_metrics=False).registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum"))
    return names


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {name for expr in queries(dashboard) for name in METRIC.findall(expr)}
    assert len(used) >= 25
    assert used - exported_names() == set()


def test_the_dashboard_has_a_panel_for_every_metric_family() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    skipped = {"oauth_gauges_refreshed_timestamp_seconds", "oauth_gauge_refresh_failures"}
    families = {f.name for f in Metrics(process_metrics=False).registry.collect()} - skipped
    missing = {name for name in families if name not in text}
    assert missing == set()


def test_the_dashboard_picks_its_datasource_and_instances_from_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    assert dashboard["uid"] == "mcp-oauthd"
    assert all('job=~"$job"' in expr for expr in queries(dashboard) if "label_values" not in expr)
