"""deploy/prometheus/alerts.yaml (the SLO recording rules and alerts of docs/SLO.md) and
docs/dashboards/entitlements.json.

`promtool check rules` validates the rules file where promtool is installed (Debian package
`prometheus`), and the dashboard's queries through it; the parser tests always run: every
alert has its severity, summary and a runbook_url pointing at an entry of docs/RUNBOOK.md,
every metric named in a query is one the service exports (or a recording rule of the file),
the burn-rate alerts use the SRE workbook's windows and factors, and the status codes counted
as errors are exactly the server faults of docs/SLO.md, in either spelling of the code label."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
SLO = ROOT / "docs" / "SLO.md"
DASHBOARD = ROOT / "docs" / "dashboards" / "entitlements.json"

# The metrics the service exports (issue 14), and their histograms' series.
EXPORTED = {
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "entitlements_cache_lookups_total",
    "entitlements_cache_entries",
    "entitlements_cache_evictions_total",
    "entitlements_single_flight_waits_total",
    "entitlements_rpcs_shed_total",
    "entitlements_rpcs_expired_total",
    "entitlements_store_errors_total",
    "entitlements_spanner_transaction_aborts_total",
    "entitlements_store_ready",
    "entitlements_worker_restarts_total",
    "entitlements_catalog_info",
    "entitlements_build_info",
    "entitlements_feed_lag_seconds",
    "entitlements_feed_changes_total",
    "entitlements_feed_cache_resets_total",
    "entitlements_watch_streams_open",
    "entitlements_notifications_total",
    "entitlements_notifications_refused_total",
    "entitlements_dead_letters_total",
    "entitlements_dead_letters_open",
}
HISTOGRAMS = {
    "grpc_server_handling_seconds",
    "entitlements_event_loop_lag_seconds",
    "entitlements_store_call_seconds",
    "entitlements_notification_lag_seconds",
}
# Not exported yet: rules and panels on them must say so.
PLANNED: set[str] = set()
KNOWN = (
    EXPORTED
    | PLANNED
    | {f"{name}_{suffix}" for name in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
)
# The histogram buckets of grpc_server_handling_seconds: latency thresholds must be one.
HANDLING_BUCKETS = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

# docs/SLO.md: the codes that count against availability, and those that do not.
SERVER_FAULTS = ("UNKNOWN", "DEADLINE_EXCEEDED", "ABORTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS")
NOT_FAULTS = (
    "OK",
    "CANCELLED",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "UNAUTHENTICATED",
)
SEVERITIES = {"page", "ticket"}
SLI_WINDOWS = ("5m", "30m", "1h", "6h", "3d")

# PromQL words that are not metric names.
KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}

Rule = dict[str, Any]


def _groups() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    groups: list[dict[str, Any]] = document["groups"]
    return groups


def _rules() -> Iterator[Rule]:
    for group in _groups():
        yield from group["rules"]


ALERTS = [rule for rule in _rules() if "alert" in rule]
RECORDINGS = {rule["record"]: rule for rule in _rules() if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """The metric (or recording rule) names a PromQL expression selects: what is left after
    removing strings, label matchers, grouping clauses, ranges, Grafana variables and the
    names of functions and aggregations (words followed by a parenthesis)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, is_call = match.group(1), match.group(2)
        if not is_call and word.lower() not in KEYWORDS:
            names.add(word)
    return names


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a document's headings."""
    anchors = set()
    for line in markdown.splitlines():
        if heading := re.match(r"#{1,6}\s+(.*)", line):
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_metric_names_are_found_in_expressions() -> None:
    """The parser the other tests rely on."""
    expr = (
        'sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket{a="b", c=~"d|e"}'
        "[$__rate_interval])) / ignoring (le) entitlements:rpc_errors:ratio_rate5m offset 1d"
        " and on (namespace) absent(entitlements_build_info) > 14.4 * 0.001 or vector(1)"
    )
    assert metric_names(expr) == {
        "grpc_server_handling_seconds_bucket",
        "entitlements:rpc_errors:ratio_rate5m",
        "entitlements_build_info",
    }


# --- the rules file ---------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool not installed (Debian package `prometheus`: apt-get install prometheus); "
            "the parser tests below still check the rules"
        )
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_complete() -> None:
    assert ALERTS
    names = [alert["alert"] for alert in ALERTS]
    assert len(names) == len(set(names)), "alert names must be unique"
    for alert in ALERTS:
        name = alert["alert"]
        assert alert.get("expr", "").strip(), name
        assert re.fullmatch(r"\d+[smhd]", str(alert.get("for", ""))), f"{name}: for"
        assert alert.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = alert.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name}: summary"
        assert annotations.get("runbook_url", "").strip(), f"{name}: runbook_url"


def test_every_runbook_url_points_at_an_entry_of_the_runbook() -> None:
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    for alert in ALERTS:
        url = alert["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("docs/RUNBOOK.md"), url
        assert anchor in anchors, f"{alert['alert']}: no heading for #{anchor} in RUNBOOK.md"
        assert anchor == alert["alert"].lower(), "one runbook entry per alert, named after it"


def test_every_metric_in_a_rule_is_exported_or_recorded() -> None:
    for rule in _rules():
        name = rule.get("alert") or rule["record"]
        used = metric_names(rule["expr"])
        assert used, name
        unknown = used - KNOWN - set(RECORDINGS)
        assert not unknown, f"{name}: unknown metrics {sorted(unknown)}"


def test_rules_on_planned_metrics_say_so() -> None:
    for alert in ALERTS:
        if metric_names(alert["expr"]) & PLANNED:
            assert "planned" in alert["annotations"]["summary"].lower(), alert["alert"]


def test_recording_rules_follow_the_naming_convention() -> None:
    for name in RECORDINGS:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), name
    for sli in ("rpc_requests:rate", "rpc_errors:ratio_rate", "rpc_slow:ratio_rate"):
        for window in SLI_WINDOWS:
            assert f"entitlements:{sli}{window}" in RECORDINGS, f"{sli}{window}"


def _code_matchers(expr: str) -> list[str]:
    return re.findall(r'grpc_code=~"([^"]*)"', expr)


def _matches(pattern: str, value: str) -> bool:
    """Prometheus matches label regexes fully anchored (RE2; this syntax is Python's too)."""
    return re.fullmatch(pattern, value) is not None


def _spellings(code: str) -> tuple[str, str]:
    """Python's status name and Go's ("DEADLINE_EXCEEDED", "DeadlineExceeded")."""
    return code, "".join(part.capitalize() for part in code.split("_"))


def test_server_faults_and_only_they_count_as_errors() -> None:
    for window in SLI_WINDOWS:
        expr = RECORDINGS[f"entitlements:rpc_errors:ratio_rate{window}"]["expr"]
        (pattern,) = _code_matchers(expr)
        for code in SERVER_FAULTS:
            for spelling in _spellings(code):
                assert _matches(pattern, spelling), f"{spelling} should count ({window})"
        for code in NOT_FAULTS:
            for spelling in _spellings(code):
                assert not _matches(pattern, spelling), f"{spelling} should not count ({window})"


def test_the_slo_document_lists_the_same_error_codes() -> None:
    text = SLO.read_text(encoding="utf-8")
    for code in (*SERVER_FAULTS, *NOT_FAULTS):
        assert f"`{code}`" in text, code


def test_latency_thresholds_are_histogram_buckets() -> None:
    for window in SLI_WINDOWS:
        expr = RECORDINGS[f"entitlements:rpc_slow:ratio_rate{window}"]["expr"]
        thresholds = re.findall(r'le="([^"]+)"', expr)
        assert thresholds
        for threshold in thresholds:
            assert float(threshold) in HANDLING_BUCKETS, threshold


def _alert(name: str) -> Rule:
    (alert,) = (a for a in ALERTS if a["alert"] == name)
    return alert


def _burn_conditions(expr: str) -> set[tuple[str, str, float]]:
    """(SLI, window, burn factor) of each `sli:ratio_rateW > (F * budget)` comparison."""
    found = set()
    for sli, window, factor, budget in re.findall(
        r"entitlements:(\w+):ratio_rate(\w+)\s*>\s*\(?\s*(?:([\d.]+)\s*\*\s*)?([\d.]+)\s*\)?",
        expr,
    ):
        found.add((sli, window, round(float(factor or 1), 3)))
        assert float(budget) in (0.001, 0.01), f"budget {budget}"
    return found


@pytest.mark.parametrize(
    ("alert", "sli"),
    [
        ("EntitlementsAvailabilityFastBurn", "rpc_errors"),
        ("EntitlementsLatencyFastBurn", "rpc_slow"),
        ("EntitlementsLoadShedding", "rpcs_shed"),
    ],
)
def test_fast_burn_pages_on_two_window_pairs(alert: str, sli: str) -> None:
    rule = _alert(alert)
    assert rule["labels"]["severity"] == "page"
    assert _burn_conditions(rule["expr"]) == {
        (sli, "1h", 14.4),
        (sli, "5m", 14.4),
        (sli, "6h", 6.0),
        (sli, "30m", 6.0),
    }


@pytest.mark.parametrize(
    ("alert", "sli"),
    [
        ("EntitlementsAvailabilitySlowBurn", "rpc_errors"),
        ("EntitlementsLatencySlowBurn", "rpc_slow"),
    ],
)
def test_slow_burn_opens_a_ticket_over_three_days(alert: str, sli: str) -> None:
    rule = _alert(alert)
    assert rule["labels"]["severity"] == "ticket"
    assert _burn_conditions(rule["expr"]) == {(sli, "3d", 1.0), (sli, "6h", 1.0)}


def test_budgets_match_the_objectives() -> None:
    """Availability 99.9% (budget 0.001), latency 99% (0.01), as docs/SLO.md states."""
    text = SLO.read_text(encoding="utf-8")
    assert "99.9%" in text
    assert "99%" in text
    for name, budget in (
        ("EntitlementsAvailabilityFastBurn", "0.001"),
        ("EntitlementsAvailabilitySlowBurn", "0.001"),
        ("EntitlementsLatencyFastBurn", "0.01"),
        ("EntitlementsLatencySlowBurn", "0.01"),
        ("EntitlementsLoadShedding", "0.001"),
    ):
        expr = _alert(name)["expr"]
        assert re.search(rf"[>*]\s*\(?\s*{re.escape(budget)}\b", expr), name


def test_every_alert_has_a_runbook_heading() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    for alert in ALERTS:
        assert f"## {alert['alert']}" in runbook, alert["alert"]


# --- the dashboard ------------------------------------------------------------------------


def _panels() -> Iterator[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _panel_queries() -> Iterator[tuple[str, str]]:
    for panel in _panels():
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"]
    assert dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    ids = [panel["id"] for panel in _panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels():
        position = panel["gridPos"]
        assert position["x"] >= 0, panel["title"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), panel["title"]


def test_every_dashboard_query_uses_known_metrics() -> None:
    queries = list(_panel_queries())
    assert queries
    for title, expr in queries:
        used = metric_names(expr)
        assert used, title
        unknown = used - KNOWN - set(RECORDINGS)
        assert not unknown, f"{title}: unknown metrics {sorted(unknown)}"
        if used & PLANNED:
            assert "planned" in title.lower(), f"{title}: say the metric is planned"


def test_dashboard_covers_the_signals() -> None:
    used = set().union(*(metric_names(expr) for _, expr in _panel_queries()))
    for name in (
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "entitlements_cache_lookups_total",
        "entitlements_rpcs_shed_total",
        "entitlements_store_call_seconds_bucket",
        "entitlements_store_errors_total",
        "entitlements_spanner_transaction_aborts_total",
        "entitlements_feed_lag_seconds",
    ):
        assert name in used, name


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each query, with Grafana's variables replaced, as a recording rule for promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    substitutions = {"$__rate_interval": "5m", "$__range": "6h", "$namespace": ".*"}
    rules = []
    for index, (_, expr) in enumerate(_panel_queries()):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query:{index}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_slos_count_unary_calls_only() -> None:
    """Server streams are counted too (grpc_type="server_stream"): a watch ended by a
    rollout, or held open for an hour, must not count against the request SLOs."""
    text = RULES.read_text(encoding="utf-8")
    # (grpc_server_handling_seconds holds unary calls only: streams have their own.)
    selectors = re.findall(r"grpc_server_(?:handled|started)_total\{([^}]*)\}", text)
    assert selectors
    for selector in selectors:
        assert 'grpc_type="unary"' in selector, selector
