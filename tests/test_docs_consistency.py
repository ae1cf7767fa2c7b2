"""What the docs say about ports, metrics, versions and memory, checked against the code.

- Metric names: every `grpc_server_*` / `entitlements_*` name in the README, docs/ (the
  dashboard included) and deploy/ (alerts) is one the server exports, as its declarations
  in service/ make it (read from the source, and the source reading checked against the
  live prometheus registry the server builds); docs/ names every one (docs/OPERATIONS.md
  lists them); no page calls a metric "planned" or "not exported" while the server exports it.
- Ports: the metrics port the docs give is the one deploy/ sets; every loopback port the
  docs give belongs to something that listens there (the gRPC server's default, the metrics
  port, the Spanner emulator's default, the OTLP collector's default).
- Versions: `entitlements --version` names the server's and the API's versions; a
  development API version in the docs is service.API_VERSION; a date given for the
  released API (its image, its release) is the one CHANGELOG.md gives.
- Memory per cached user: every figure the docs and deploy/ give is one docs/PERFORMANCE.md
  measured (`make bench-memory`)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import prometheus_client
import pytest

import service
from service.config import Settings
from service.grpc_api import metrics as metrics_module
from tests.support.processes import ENTITLEMENTS

ROOT = Path(__file__).resolve().parent.parent
METRIC_SOURCES = ("service", "storage")
# (entitlements_client is the client library's import name, not a metric.)
METRIC_NAME = re.compile(r"\b(?:grpc_server|entitlements)_(?!client\b)[a-z0-9_]*[a-z0-9]\b")
# A claim that a metric does not exist yet.
NOT_EXPORTED = re.compile(r"planned|not (?:yet )?exported|exported yet|not exported", re.I)


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def documentation() -> list[Path]:
    """Every page that names metrics, ports or versions for readers and operators."""
    return [
        *markdown_pages(),
        *sorted((ROOT / "docs" / "dashboards").glob("*.json")),
        *sorted((ROOT / "deploy").rglob("*.yaml")),
        ROOT / "deploy" / "Dockerfile",
    ]


def paragraphs(page: Path) -> Iterator[str]:
    """A page's paragraphs (a JSON dashboard: each string value)."""
    text = page.read_text(encoding="utf-8")
    if page.suffix == ".json":
        yield from _strings(json.loads(text))
        return
    yield from (block for block in re.split(r"\n\s*\n", text) if block.strip())


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for item in node.values():
            yield from _strings(item)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


# --- metrics ---------------------------------------------------------------------------


def _sample_names(kind: str, name: str) -> set[str]:
    """The names a metric of this kind shows in the exposition (multi-process mode: no
    `_created`)."""
    base = name.removesuffix("_total") if kind == "counter" else name
    return {
        "counter": {f"{base}_total"},
        "gauge": {base},
        "histogram": {base, f"{base}_bucket", f"{base}_sum", f"{base}_count"},
        "summary": {base, f"{base}_sum", f"{base}_count"},
        "info": {f"{base}_info"},
    }[kind]


_KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram",
          "Summary": "summary", "Info": "info"}  # fmt: skip


def declared_metrics() -> dict[str, str]:
    """Every metric the shipped code declares (`Counter("name", ...)` and kin), name ->
    kind, read from the source so that a metric made by any factory counts."""
    found: dict[str, str] = {}
    for folder in METRIC_SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                callee = node.func
                called = callee.attr if isinstance(callee, ast.Attribute) else None
                if isinstance(callee, ast.Name):
                    called = callee.id
                first = node.args[0]
                if (
                    called in _KINDS
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                ):
                    found[first.value] = _KINDS[called]
    return found


def exported_names() -> set[str]:
    names: set[str] = set()
    for name, kind in declared_metrics().items():
        names |= _sample_names(kind, name)
    return names


def test_reading_the_declarations_finds_what_the_live_registry_holds() -> None:
    """The server's own metric objects, made as its processes make them, registered in
    prometheus-client's registry: their names are what declared_metrics() reads."""
    metrics_module.metrics()
    metrics_module.supervisor_metrics()
    metrics_module.feed_reads()
    live: set[str] = set()
    for family in prometheus_client.REGISTRY.collect():
        if METRIC_NAME.fullmatch(family.name):
            live |= _sample_names(family.type, family.name)
    assert live, "no metric of the server in the registry"
    assert live <= exported_names(), sorted(live - exported_names())


def test_every_metric_the_docs_name_is_exported() -> None:
    exported = exported_names()
    unknown = {
        f"{page.relative_to(ROOT)}: {name}"
        for page in documentation()
        for name in METRIC_NAME.findall(page.read_text(encoding="utf-8"))
        if name not in exported
    }
    assert not unknown, "names the server does not export:\n" + "\n".join(sorted(unknown))


def test_the_docs_name_every_exported_metric() -> None:
    """An operator finds every metric in docs/ (docs/OPERATIONS.md, "Metrics", lists them;
    a feature's own page may describe its metrics further)."""
    named = {
        name
        for page in sorted((ROOT / "docs").rglob("*.md"))
        for name in METRIC_NAME.findall(page.read_text(encoding="utf-8"))
    }
    missing = sorted(
        name for name, kind in declared_metrics().items() if not _sample_names(kind, name) & named
    )
    assert not missing, f"no page of docs/ names (add them to docs/OPERATIONS.md): {missing}"


def _alert_metrics() -> dict[str, set[str]]:
    """Each alert of deploy/prometheus/alerts.yaml -> the metrics its expression reads
    (through the recording rules it uses)."""
    import yaml

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    recorded: dict[str, set[str]] = {}
    alerts: dict[str, str] = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                recorded.setdefault(rule["record"], set()).update(METRIC_NAME.findall(rule["expr"]))
            else:
                alerts[rule["alert"]] = rule["expr"]
    result: dict[str, set[str]] = {}
    for alert, expr in alerts.items():
        names = set(METRIC_NAME.findall(expr))
        for record, used in recorded.items():
            if record in expr:
                names |= used
        result[alert] = names
    return result


def test_no_page_calls_an_exported_metric_planned() -> None:
    """A page saying metrics are planned or not exported yet must name them (or an alert
    reading them), and they must really be missing from the server."""
    exported = exported_names()
    alerts = _alert_metrics()
    wrong: list[str] = []
    for page in documentation():
        for paragraph in paragraphs(page):
            for sentence in re.split(r"(?<=[.;:])\s+|\n(?=\s*[-*] )", paragraph):
                if not NOT_EXPORTED.search(sentence):
                    continue
                named = set(METRIC_NAME.findall(sentence))
                for alert, used in alerts.items():
                    if alert in sentence:
                        named |= used
                if not named or named & exported:
                    claim = " ".join(sentence.split())[:160]
                    wrong.append(f"{page.relative_to(ROOT)}: {claim!r}")
    assert not wrong, "claims that exported metrics are missing:\n" + "\n".join(wrong)


def test_the_dashboard_has_no_planned_row() -> None:
    """A dashboard row's title speaks for the panels under it, which name no metric in
    their title: a row "planned" above exported metrics is as wrong as a sentence."""
    exported = exported_names()
    for board in sorted((ROOT / "docs" / "dashboards").glob("*.json")):
        panels = json.loads(board.read_text(encoding="utf-8"))["panels"]
        row_title = ""
        for panel in panels:
            if panel.get("type") == "row":
                row_title = panel.get("title", "")
                continue
            if not NOT_EXPORTED.search(row_title):
                continue
            used = {
                name
                for target in panel.get("targets", [])
                for name in METRIC_NAME.findall(target.get("expr", ""))
            }
            assert not used & exported, (
                f"{board.name}: row {row_title!r} over {panel.get('title')!r}, whose "
                f"metrics {sorted(used & exported)} the server exports"
            )


# --- ports -----------------------------------------------------------------------------


def _one(pattern: str, text: str, where: str) -> int:
    found = {int(value) for value in re.findall(pattern, text)}
    assert len(found) == 1, f"{where}: expected one value of {pattern!r}, found {found}"
    return found.pop()


def metrics_port() -> int:
    """The metrics port of the image and the Kubernetes manifests, which must agree."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    port = _one(r"ENTITLEMENTS_METRICS_PORT=(\d+)", dockerfile, "deploy/Dockerfile")
    kubernetes = ROOT / "deploy" / "kubernetes"
    deployment = (kubernetes / "deployment.yaml").read_text()
    service_yaml = (kubernetes / "service.yaml").read_text()
    assert _one(r"name: metrics\s+containerPort: (\d+)", deployment, "deployment") == port
    assert _one(r"ENTITLEMENTS_METRICS_PORT\s+value: \"(\d+)\"", deployment, "env") == port
    assert _one(r"prometheus\.io/port: \"(\d+)\"", deployment, "annotation") == port
    assert _one(r"name: metrics\s+port: (\d+)", service_yaml, "service.yaml") == port
    return port


def known_ports() -> dict[int, str]:
    ports = {
        Settings().port: "the gRPC server's default port",
        metrics_port(): "the metrics port of deploy/",
    }
    script = (ROOT / "deploy" / "run-spanner-emulator.sh").read_text()
    ports[_one(r"SPANNER_EMULATOR_PORT:-(\d+)", script, "run-spanner-emulator.sh")] = (
        "the Spanner emulator's default port"
    )
    try:
        from opentelemetry.exporter.otlp.proto.grpc import exporter

        source = Path(exporter.__file__).read_text()
        ports[_one(r"\"http://localhost:(\d+)\"", source, "OTLP exporter")] = "OTLP default"
    except ImportError:  # pragma: no cover - the dev extra installs it
        pass
    return ports


# Places where the docs give the metrics port.
_METRICS_PORT_MENTIONS = (
    r"ENTITLEMENTS_METRICS_PORT\s*[=:]\s*\"?(\d+)",
    r"[:/](\d+)/metrics",
    r"metrics port \((\d+)\)",
    r"/metrics` on port (\d+)",
    r"port-forward \S+ (\d+)\b(?!\S)[^\n]*/metrics",
    r"(\d+) in the container",
)
_LOOPBACK_PORT = re.compile(r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0|HOST|\[::1?\]):(\d+)")


def test_the_docs_give_the_metrics_port_deploy_sets() -> None:
    port = metrics_port()
    wrong = [
        f"{page.relative_to(ROOT)}: {match.group(0)!r}"
        for page in documentation()
        for pattern in _METRICS_PORT_MENTIONS
        for match in re.finditer(pattern, page.read_text(encoding="utf-8"))
        if int(match.group(1)) not in (port, 0)
    ]
    assert not wrong, f"the metrics port is {port} (deploy/):\n" + "\n".join(wrong)


def test_every_port_the_docs_give_is_one_something_listens_on() -> None:
    ports = known_ports()
    wrong = [
        f"{page.relative_to(ROOT)}: {match.group(0)!r}"
        for page in markdown_pages()
        for match in _LOOPBACK_PORT.finditer(page.read_text(encoding="utf-8"))
        if int(match.group(1)) not in ports
    ]
    assert not wrong, f"ports known: {ports}; the docs also give:\n" + "\n".join(wrong)


# --- versions --------------------------------------------------------------------------


@pytest.mark.subprocess
def test_version_names_the_server_and_the_api() -> None:
    shown = subprocess.run(
        [ENTITLEMENTS, "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert metadata.version("entitlement-offer-service") in shown, shown
    assert service.API_VERSION in shown, shown
    assert "entitlements.v1" in shown, shown


def changelog_releases() -> dict[str, str]:
    """Released API versions -> their dates, from CHANGELOG.md's headings."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^## (\d+\.\d+\.\d+) \((\d{4}-\d{2}-\d{2})\)$", text, re.M))


def test_a_development_api_version_in_the_docs_is_the_current_one() -> None:
    wrong = [
        f"{page.relative_to(ROOT)}: {version}"
        for page in [*markdown_pages(), ROOT / "CHANGELOG.md"]
        for version in re.findall(r"\b\d+\.\d+\.\d+\.dev\d+\b", page.read_text())
        if version != service.API_VERSION
    ]
    assert not wrong, f"the API version is {service.API_VERSION}:\n" + "\n".join(wrong)


def test_dates_of_the_released_api_are_the_changelogs() -> None:
    """A sentence giving a date for the released API (its image, a release) gives one of
    CHANGELOG.md's release dates."""
    releases = changelog_releases()
    assert releases, "CHANGELOG.md has no released version"
    wrong: list[str] = []
    for page in markdown_pages():
        for paragraph in paragraphs(page):
            for sentence in re.split(r"(?<=\.)\s+", paragraph):
                if not re.search(r"\bimage\b|\brelease", sentence, re.I):
                    continue
                wrong.extend(
                    f"{page.relative_to(ROOT)}: {date} in {sentence[:120]!r}"
                    for date in re.findall(r"\b\d{4}-\d{2}-\d{2}\b", sentence)
                    if date not in releases.values()
                )
    assert not wrong, f"CHANGELOG.md's releases: {releases}\n" + "\n".join(wrong)


# --- memory per cached user -------------------------------------------------------------

_PER_USER = re.compile(
    r"(?<![<>=] )(?<![\d,.])(\d[\d,]*(?:\.\d+)?)\s*(B|bytes|KiB)\s*"
    r"(?:/entry|per\s+(?:cached\s+)?(?:user|entry))"
)


def _bytes(number: str, unit: str) -> float:
    return float(number.replace(",", "")) * (1024 if unit == "KiB" else 1)


def test_memory_per_cached_user_is_what_performance_measured() -> None:
    measured_text = (ROOT / "docs" / "PERFORMANCE.md").read_text(encoding="utf-8")
    measured = {_bytes(*match) for match in _PER_USER.findall(measured_text)}
    assert measured, "docs/PERFORMANCE.md gives no memory per entry"
    wrong = [
        f"{page.relative_to(ROOT)}: {number} {unit}"
        for page in documentation()
        for number, unit in _PER_USER.findall(page.read_text(encoding="utf-8"))
        if not any(abs(_bytes(number, unit) - figure) <= 0.05 * figure for figure in measured)
    ]
    assert not wrong, (
        f"docs/PERFORMANCE.md measured {sorted(measured)} bytes per cached user; elsewhere:\n"
        + "\n".join(wrong)
    )
