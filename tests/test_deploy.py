"""deploy/: the Dockerfile, the Kubernetes manifests and the health probe, checked without a
cluster or a container runtime (the image is not built here: see docs/RUNBOOK.md, "Deploying").

Every manifest is parsed with PyYAML and the fields that matter are checked against each
other: probes are gRPC probes on the serving port with the right health services, the grace
period covers the drain, the pods run as non-root with resources set, the Service, PDB and
HPA point at the Deployment, the catalog and credentials come from the ConfigMap and Secret
(whose contents the service's own parsers accept), and Spanner is reached through Workload
Identity. deploy/healthcheck.py is run against a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.catalog.parser import parse_catalog
from service.config import Settings
from service.grpc_api.auth.credentials import parse_credentials
from service.grpc_api.server import RunningServer, start_server
from storage.sqlite import SqliteRepository

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
HEALTHCHECK = DEPLOY / "healthcheck.py"

SERVED_SERVICES = (
    "entitlements.v1.EntitlementService",
    "entitlements.v1.OfferService",
    "entitlements.v1.SubscriptionEventService",
)
# Readiness may ask for the server as a whole or for one of its services (all follow the store).
READINESS_SERVICES = ("", *SERVED_SERVICES)
LIVENESS_SERVICE = "liveness"
# What terminationGracePeriodSeconds must leave beyond the drain delay and the grace: the
# workers' exit, closing the store, flushing the audit log.
SHUTDOWN_SLACK_SECONDS = 5

Manifest = dict[str, Any]


def _manifests(folder: Path = KUBERNETES) -> list[tuple[str, Manifest]]:
    return [
        (path.name, document)
        for path in sorted(folder.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document is not None
    ]


MANIFESTS = _manifests()
# The example overlay: the base and a Secret with example digests (a trial cluster only).
EXAMPLE_OVERLAY = KUBERNETES / "overlays" / "example"
EXAMPLE_MANIFESTS = _manifests(EXAMPLE_OVERLAY)


def _one(kind: str, name: str | None = None) -> Manifest:
    matches = [
        document
        for _, document in MANIFESTS
        if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def _deployment() -> Manifest:
    return _one("Deployment", "entitlements")


def _pod_spec() -> Manifest:
    spec: Manifest = _deployment()["spec"]["template"]["spec"]
    return spec


def _container() -> Manifest:
    containers: list[Manifest] = _pod_spec()["containers"]
    (container,) = (c for c in containers if c["name"] == "entitlements")
    return container


def _env() -> dict[str, Manifest]:
    return {variable["name"]: variable for variable in _container()["env"]}


def _env_value(name: str) -> str:
    variable = _env()[name]
    assert "value" in variable, f"{name} should be a literal value"
    return str(variable["value"])


def _container_port(name: str) -> int:
    (port,) = (p["containerPort"] for p in _container()["ports"] if p["name"] == name)
    assert isinstance(port, int)
    return port


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- every manifest ---------------------------------------------------------------------


def test_every_manifest_parses_and_names_itself() -> None:
    assert MANIFESTS, "no manifests in deploy/kubernetes"
    for file, document in MANIFESTS:
        assert isinstance(document, dict), file
        assert document.get("apiVersion"), file
        assert document.get("kind"), file
        if document["kind"] != "Kustomization":
            assert document["metadata"].get("name"), file
            assert document["metadata"].get("labels", {}).get("app.kubernetes.io/name"), file


def test_kustomization_lists_every_manifest_but_the_migration_job() -> None:
    kustomization = _one("Kustomization")
    resources = set(kustomization["resources"])
    for resource in resources:
        assert (KUBERNETES / resource).is_file(), resource
    expected = {
        path.name
        for path in KUBERNETES.glob("*.yaml")
        if path.name not in {"kustomization.yaml", "job-migrate.yaml"}
    }
    assert resources == expected


# --- the Deployment -----------------------------------------------------------------------


def test_probes_are_grpc_probes_on_the_serving_port() -> None:
    container = _container()
    grpc_port = _container_port("grpc")
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[probe_name]
        assert set(probe) & {"httpGet", "tcpSocket", "exec"} == set(), probe_name
        assert probe["grpc"]["port"] == grpc_port, probe_name


def test_liveness_does_not_depend_on_the_store_and_readiness_does() -> None:
    """A store outage must take pods out of rotation (readiness), never restart them
    (liveness, startup): the readiness services follow the store, "liveness" does not."""
    container = _container()
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert container["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert container["readinessProbe"]["grpc"].get("service", "") in READINESS_SERVICES
    # Liveness is more patient than readiness: a slow moment takes a pod out, never kills it.
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert (
        liveness["periodSeconds"] * liveness["failureThreshold"]
        > readiness["periodSeconds"] * readiness["failureThreshold"]
    )


def test_grace_period_covers_the_drain_delay_and_the_shutdown_grace() -> None:
    drain = float(_env_value("ENTITLEMENTS_DRAIN_DELAY_SECONDS"))
    grace = float(_env_value("ENTITLEMENTS_SHUTDOWN_GRACE_SECONDS"))
    assert drain > 0, "a drain delay lets load balancers see NOT_SERVING before the stop"
    pre_stop = _container().get("lifecycle", {}).get("preStop")
    pre_stop_seconds = 0.0
    if pre_stop is not None:  # a sleep before SIGTERM adds to everything after it
        pre_stop_seconds = float(pre_stop.get("sleep", {}).get("seconds", 0))
        command = " ".join(pre_stop.get("exec", {}).get("command", []))
        if sleep := re.search(r"sleep\s+(\d+(?:\.\d+)?)", command):
            pre_stop_seconds += float(sleep.group(1))
    termination = _pod_spec()["terminationGracePeriodSeconds"]
    assert termination >= pre_stop_seconds + drain + grace + SHUTDOWN_SLACK_SECONDS


def test_pods_run_as_non_root_without_privileges() -> None:
    pod = _pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    container = _container()["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"]["drop"] == ["ALL"]


def test_resources_are_set_with_a_cpu_limit_and_workers_follow_it() -> None:
    resources = _container()["resources"]
    for kind in ("requests", "limits"):
        assert resources[kind]["cpu"], kind
        assert resources[kind]["memory"], kind
    workers = _env()["ENTITLEMENTS_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert workers["resource"] == "limits.cpu"
    assert workers["containerName"] == _container()["name"]


def test_server_binds_every_interface_on_the_declared_ports() -> None:
    grpc_port = _container_port("grpc")
    assert _env_value("ENTITLEMENTS_HOST") == "0.0.0.0"
    assert int(_env_value("PORT")) == grpc_port
    assert int(_env_value("ENTITLEMENTS_PORT")) == grpc_port
    assert int(_env_value("ENTITLEMENTS_METRICS_PORT")) == _container_port("metrics")
    annotations = _deployment()["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == _container_port("metrics")


def test_every_entitlements_variable_is_a_setting_or_a_documented_new_one() -> None:
    """A misspelt ENTITLEMENTS_* variable would be ignored silently."""
    known = {f"ENTITLEMENTS_{name.upper()}" for name in Settings.__dataclass_fields__}
    # Settings that other changes add (issue 14): drain delay and the metrics port.
    known |= {"ENTITLEMENTS_DRAIN_DELAY_SECONDS", "ENTITLEMENTS_METRICS_PORT"}
    for name in _env():
        if name.startswith("ENTITLEMENTS_"):
            assert name in known, name


def _mounted_file(variable: str) -> tuple[Manifest, str]:
    """The volume holding the file a path variable names, and the file's key in it."""
    path = Path(_env_value(variable))
    (mount,) = (m for m in _container()["volumeMounts"] if Path(m["mountPath"]) == path.parent)
    assert mount["readOnly"] is True, variable
    (volume,) = (v for v in _pod_spec()["volumes"] if v["name"] == mount["name"])
    return volume, path.name


def test_catalog_comes_from_the_configmap_and_parses() -> None:
    volume, key = _mounted_file("ENTITLEMENTS_CATALOG_PATH")
    config_map = _one("ConfigMap", volume["configMap"]["name"])
    catalog = parse_catalog(yaml.safe_load(config_map["data"][key]))
    assert catalog.version


def test_credentials_come_from_the_secret_and_parse() -> None:
    volume, key = _mounted_file("ENTITLEMENTS_CREDENTIALS_FILE")
    (secret,) = (
        document
        for _, document in EXAMPLE_MANIFESTS
        if document["kind"] == "Secret"
        and document["metadata"]["name"] == volume["secret"]["secretName"]
    )
    credentials = parse_credentials(yaml.safe_load(secret["stringData"][key]), "secret")
    assert credentials


def test_the_base_ships_no_secret_and_the_example_overlay_adds_it() -> None:
    """`kubectl apply -k deploy/kubernetes` must not install example digests (issue 25):
    the Secret is the operator's; the example overlay is the base plus an example one."""
    assert not [document for _, document in MANIFESTS if document["kind"] == "Secret"]
    (overlay,) = (d for _, d in EXAMPLE_MANIFESTS if d["kind"] == "Kustomization")
    assert overlay["resources"][0] == "../.."
    assert overlay["namespace"] == _one("Kustomization")["namespace"]
    for resource in overlay["resources"][1:]:
        assert (EXAMPLE_OVERLAY / resource).is_file(), resource
    secrets = [d for _, d in EXAMPLE_MANIFESTS if d["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {
        v["secret"]["secretName"] for v in _pod_spec()["volumes"] if "secret" in v
    }


def test_spanner_through_workload_identity() -> None:
    assert _env_value("ENTITLEMENTS_STORAGE_URL").startswith("spanner://projects/")
    account = _one("ServiceAccount", _pod_spec()["serviceAccountName"])
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com"
    )
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in _env(), "no key files: Workload Identity"


def test_replicas_are_left_to_the_autoscaler() -> None:
    assert "replicas" not in _deployment()["spec"]


# --- Service, PDB, HPA --------------------------------------------------------------------


def test_service_is_headless_and_its_ports_reach_the_container() -> None:
    service = _one("Service", "entitlements")
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    assert _matches(service["spec"]["selector"], pod_labels)
    container_ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        number = container_ports[target] if isinstance(target, str) else target
        assert number in container_ports.values(), port
        assert port["port"] == number, "clients resolve pod IPs: the port must be the pod's"
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}


def test_the_shipped_service_config_balances_over_the_headless_service() -> None:
    """Headless, the Service gives clients every pod's address; only a client-side policy
    that balances per RPC uses them (pick_first, gRPC's default, sticks to one pod)."""
    assert _one("Service", "entitlements")["spec"]["clusterIP"] == "None"
    shipped = json.loads((ROOT / "clients" / "service_config.json").read_text(encoding="utf-8"))
    assert shipped["loadBalancingConfig"] == [{"round_robin": {}}]
    assert "clients/service_config.json" in (KUBERNETES / "service.yaml").read_text()


def test_pdb_selects_the_deployment_pods() -> None:
    pdb = _one("PodDisruptionBudget")
    deployment = _deployment()
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert _matches(
        pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


def test_hpa_targets_the_deployment_and_leaves_room_for_the_pdb() -> None:
    hpa = _one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        _deployment()["metadata"]["name"],
    )
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    assert hpa["spec"]["metrics"], "scale on something"


def test_migration_job_uses_its_own_identity() -> None:
    job = _one("Job", "entitlements-migrate")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    assert pod["serviceAccountName"] != _pod_spec()["serviceAccountName"]
    account = _one("ServiceAccount", pod["serviceAccountName"])
    assert "iam.gke.io/gcp-service-account" in account["metadata"]["annotations"]
    assert pod["securityContext"]["runAsNonRoot"] is True


# --- the Dockerfile -------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "ENV":
            env.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", arguments))
    return env


def test_dockerfile_is_multi_stage_on_slim_python_311() -> None:
    instructions = _dockerfile_instructions()
    args = dict(argument.split("=", 1) for keyword, argument in instructions if keyword == "ARG")
    stages = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert len(stages) >= 2
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage.split()[0])
        assert image.startswith("python:3.11-slim"), image
    assert any("--from=build" in a for k, a in instructions if k == "COPY")


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in _dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_health_check_asks_for_liveness() -> None:
    instructions = _dockerfile_instructions()
    (check,) = (arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK")
    assert "healthcheck.py" in check
    assert f'"{LIVENESS_SERVICE}"' in check or f" {LIVENESS_SERVICE}" in check
    assert any(
        keyword == "COPY" and "deploy/healthcheck.py" in arguments
        for keyword, arguments in instructions
    )


def test_dockerfile_settings_match_the_deployment() -> None:
    env = _dockerfile_env()
    assert env["ENTITLEMENTS_HOST"] == "0.0.0.0"
    assert env["PORT"] == env["ENTITLEMENTS_PORT"] == str(_container_port("grpc"))
    assert env["ENTITLEMENTS_METRICS_PORT"] == str(_container_port("metrics"))
    for name in ("ENTITLEMENTS_DRAIN_DELAY_SECONDS", "ENTITLEMENTS_SHUTDOWN_GRACE_SECONDS"):
        assert float(env[name]) == float(_env_value(name)), name
    exposed = {
        int(port.split("/")[0])
        for keyword, arguments in _dockerfile_instructions()
        if keyword == "EXPOSE"
        for port in arguments.split()
    }
    assert exposed == {_container_port("grpc"), _container_port("metrics")}
    (user,) = {a for k, a in _dockerfile_instructions() if k == "USER"}
    assert int(user.split(":")[0]) == _pod_spec()["securityContext"]["runAsUser"]


def test_dockerfile_copies_only_files_that_exist() -> None:
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in arguments:
            *sources, _destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), source


def _build_stage() -> list[tuple[str, str]]:
    """The instructions of the stage named "build", its FROM excluded."""
    instructions = _dockerfile_instructions()
    (start,) = (
        index
        for index, (keyword, arguments) in enumerate(instructions)
        if keyword == "FROM" and arguments.split()[-1] == "build"
    )
    end = next(
        (i for i in range(start + 1, len(instructions)) if instructions[i][0] == "FROM"),
        len(instructions),
    )
    return instructions[start + 1 : end]


# An absolute path in a RUN command (not the second slash of "//", not after "scheme:").
_ABSOLUTE_PATH = re.compile(r"(?<![\w./:-])/(?=[A-Za-z])")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dockerfile_build_stage_installs_in_a_fresh_venv(tmp_path: Path) -> None:
    """The build stage's own steps, read from the Dockerfile and run in order here: its ENV,
    WORKDIR, COPY and RUN, every absolute path moved under a scratch root, `python` the
    base interpreter (as in the python image). No image can be built on these machines, so
    this is what proves the image's install works (issue 25: a constraints file with hashes
    made pip demand hashes for every requirement). Packages come from the machine's pip
    configuration, as a build's would from its index."""
    root = tmp_path / "root"
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "python").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(
        [str(shim), *(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)]
    )
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    env["PATH"] = path
    workdir = root
    root.mkdir()
    ran = []
    for keyword, arguments in _build_stage():
        if keyword == "ENV":
            env.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", arguments))
        elif keyword == "WORKDIR":
            workdir = root / arguments.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, destination = arguments.split()
            target = (
                root / destination.lstrip("/")
                if destination.startswith("/")
                else (workdir / destination)
            )
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():  # Docker copies a folder's contents
                    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
                    shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif keyword == "RUN":
            command = _ABSOLUTE_PATH.sub(f"{root}/", arguments)
            result = subprocess.run(
                ["sh", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, f"RUN {arguments}\n{result.stdout}\n{result.stderr}"
            ran.append(arguments)
    assert any("pip install" in command for command in ran), ran
    venv = root / "opt" / "venv"
    # The image's venv: the service and its runtime dependencies, no development tools.
    version = subprocess.run(
        [str(venv / "bin" / "entitlements"), "--version"],
        cwd=tmp_path,
        env={**env, "PATH": f"{venv / 'bin'}{os.pathsep}{path}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    probe = "import grpc, google.cloud.spanner, uvloop, service.grpc_api.server; import pytest"
    missing_dev = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "No module named 'pytest'" in missing_dev.stderr, missing_dev.stderr


# --- the health probe ---------------------------------------------------------------------


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--timeout", "5", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    database = tmp_path_factory.mktemp("deploy") / "entitlements.db"
    SqliteRepository(database, create=True).close()  # what `entitlements serve` does first
    settings = Settings(host="127.0.0.1", port=0, storage_url=f"sqlite:///{database}")
    running = start_server(settings)
    try:
        yield running
    finally:
        running.stop(grace_seconds=1)


@pytest.mark.parametrize("service", READINESS_SERVICES)
def test_probe_passes_for_a_serving_service(server: RunningServer, service: str) -> None:
    result = _probe("--address", f"127.0.0.1:{server.port}", "--service", service)
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout


def test_probe_of_the_liveness_service(server: RunningServer) -> None:
    result = _probe("--address", f"127.0.0.1:{server.port}", "--service", LIVENESS_SERVICE)
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout


def test_probe_fails_for_an_unknown_service(server: RunningServer) -> None:
    result = _probe("--address", f"127.0.0.1:{server.port}", "--service", "no.such.Service")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr


def test_probe_without_grpc_says_which_python_to_use() -> None:
    """The runbook's probe run by a Python without the service's packages (issue 25: a
    traceback, "No module named 'grpc'"): exit 2 and how to run it."""
    bare_python = Path(sys.base_prefix) / "bin" / "python3"
    result = subprocess.run(
        [str(bare_python), "-I", "-S", str(HEALTHCHECK), "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert ".venv/bin/python deploy/healthcheck.py" in result.stderr
    assert "kubectl exec POD -- python /app/healthcheck.py" in result.stderr


def test_the_runbook_runs_the_probe_with_the_service_python() -> None:
    runbook = (ROOT / "docs" / "RUNBOOK.md").read_text(encoding="utf-8")
    commands = re.findall(r"`([^`]*healthcheck\.py[^`]*)`", runbook)
    assert commands
    for command in commands:
        assert command.startswith((".venv/bin/python ", "kubectl ")), command


def test_probe_fails_when_nothing_listens() -> None:
    result = _probe("--address", "127.0.0.1:1", "--timeout", "1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
