"""The rendered project's Kubernetes manifests (deploy/k8s): rendered by kustomize, checked.

No cluster can run here, so this proves what can be proved offline: `kubectl kustomize`
renders each overlay; `kubernetes-validate --strict` accepts every object for the Kubernetes
version the project's README names; each pod gets its own secrets and no others (read from the
rendered env, envFrom and volumes, against PROCESS_SECRETS); the settings carry .env.example's
names and defaults; pods are hardened; network policies allow only PostgreSQL, Redis and DNS;
images can be overridden. Needs kubectl (with its built-in kustomize) on PATH: a missing one
fails the tests.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import SECRET_KEYS, bake, read_env, run

OVERLAYS = ("dev", "prod")
# Secrets of the pods that are not the app's processes: the dev overlay's own servers.
SERVER_SECRETS = {"redis": {"REDIS_PASSWORD"}}
# Settings the manifests set that .env.example does not list, and why.
NOT_IN_ENV_EXAMPLE = {
    "DB_PORT": "the port inside the cluster (core/config.py: DB_PORT wins over DB_HOST_PORT)",
    "REDIS_PORT": "likewise for Redis",
    "WEB_CONCURRENCY": "uvicorn's own, as in compose.yml",
    "SETTINGS_ENV_FILE": "empty: the pods read no .env file",
    "WORKER_METRICS_HOST": "0.0.0.0: Prometheus scrapes the pod's address, as in compose.yml",
}
# .env.example settings the pods do not get, and why.
NOT_FOR_PODS = {
    "API_HOST": "the image's command binds 0.0.0.0",
    "API_HOST_PORT": "a host port; the Service publishes the API",
    "DB_HOST_PORT": "a host port; DB_PORT is the cluster's",
    "REDIS_HOST_PORT": "a host port; REDIS_PORT is the cluster's",
    "DB_BOOTSTRAP_USER": "the bootstrap's alone (the dev PostgreSQL's POSTGRES_USER)",
    **{
        f"{name}_IMAGE": "compose's and the Dockerfiles' images; kustomize's `images:` here"
        for name in ("PYTHON", "UV", "POSTGRES", "REDIS", "FLYWAY")
    },
}
# Settings whose value differs from .env.example's on purpose (names of servers, TLS).
CLUSTER_VALUES = {"DB_HOST", "REDIS_HOST", "ENV"}
PROD_VALUES = {"DB_SSLMODE", "DB_SSLROOTCERT", "REDIS_SSL", "REDIS_SSL_CA_CERTS"}
PEM = "-----BEGIN CERTIFICATE-----\nMIIBdGVzdA==\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.fail(
            "kubectl is not installed: these tests render the manifests with `kubectl "
            "kustomize` (install kubectl 1.27 or newer)",
            pytrace=False,
        )
    return found


class Rendered:
    """A baked project with its k8s secrets written and both overlays rendered."""

    def __init__(self, project: Path, kubectl: str, python: str) -> None:
        self.project = project
        done = run(["make", "k8s-secrets"], project, PYTHON=python)
        assert done.returncode == 0, done.stderr
        self.secrets_output = done.stdout + done.stderr
        for name in ("postgres-ca.pem", "redis-ca.pem"):  # the prod overlay's CA files
            (project / "deploy/k8s/overlays/prod/ca" / name).write_text(PEM)
        self.files: dict[str, Path] = {}
        self.docs: dict[str, list[dict[str, Any]]] = {}
        for overlay in OVERLAYS:
            done = run([kubectl, "kustomize", f"deploy/k8s/overlays/{overlay}"], project)
            assert done.returncode == 0, f"{overlay}: {done.stderr}"
            self.files[overlay] = project / f"rendered-{overlay}.yaml"
            self.files[overlay].write_text(done.stdout)
            self.docs[overlay] = [d for d in yaml.safe_load_all(done.stdout) if d]
        self.app = project.name
        self.dotenv = read_env(project / ".env")
        self.example = {k: v.strip('"') for k, v in read_env(project / ".env.example").items()}
        probe = (
            f"import json; from {self.app}.core.config import PROCESS_SECRETS as P; "
            f"from {self.app}.api.main import app; "
            "print(json.dumps({'secrets': P, 'paths': sorted(app.openapi()['paths'])}))"
        )
        done = run([python, "-c", probe], project, PYTHONPATH=str(project / "src"))
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        self.process_secrets = {k: set(v) for k, v in found["secrets"].items()}
        self.paths = set(found["paths"])

    def objects(self, overlay: str, kind: str) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.docs[overlay] if d["kind"] == kind}

    def generated(self, overlay: str, kind: str, name: str) -> dict[str, Any]:
        """A generated ConfigMap or Secret by its name before kustomize's hash suffix."""
        found = [o for n, o in self.objects(overlay, kind).items() if n.rsplit("-", 1)[0] == name]
        assert len(found) == 1, f"{overlay}: {kind} {name}: {len(found)} found"
        return found[0]

    def workloads(self, overlay: str) -> dict[str, dict[str, Any]]:
        """Pod specs by component: Deployments, StatefulSets and the Job."""
        pods = {}
        for kind in ("Deployment", "StatefulSet", "Job"):
            for obj in self.objects(overlay, kind).values():
                component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
                pods[component] = obj["spec"]["template"]
        return pods


@pytest.fixture(scope="module")
def rendered(cookies_session, kubectl: str, project_python: str) -> Rendered:
    return Rendered(bake(cookies_session), kubectl, project_python)


def secret_keys(rendered: Rendered, overlay: str, pod: dict[str, Any]) -> set[str]:
    """Every secret key a pod can read: env, envFrom and volumes (and projected volumes)."""
    secrets = {n.rsplit("-", 1)[0]: o for n, o in rendered.objects(overlay, "Secret").items()}

    def keys(name: str) -> set[str]:
        assert name.rsplit("-", 1)[0] in secrets, f"{name}: no such Secret"
        return set(secrets[name.rsplit("-", 1)[0]].get("data", {}))

    found: set[str] = set()
    spec = pod["spec"]
    for container in spec.get("initContainers", []) + spec["containers"]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                found |= keys(source["secretRef"]["name"])
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in keys(ref["name"]), f"{ref} names no key of its Secret"
                found.add(ref["key"])
    for volume in spec.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        for source in sources:
            if "secret" in source:
                name = source["secret"].get("secretName") or source["secret"]["name"]
                found |= keys(name)
    return found


def test_k8s_secrets_are_private_ignored_and_exact(rendered: Rendered) -> None:
    project, app = rendered.project, rendered.app
    files = sorted(project.glob("deploy/k8s/**/secrets/*.env"))
    assert sorted(f.name for f in files) == sorted(
        ["api.env", "worker.env", "migrate.env", "postgres.env", "redis.env"]
    )
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
    assert run(["git", "init", "-q"], project).returncode == 0
    names = [str(f.relative_to(project)) for f in files]
    ignored = run(["git", "check-ignore", *names], project)
    assert ignored.stdout.split() == names, "a secrets file is not git-ignored"
    docker = (project / ".dockerignore").read_text().splitlines()
    assert "deploy/k8s/**/secrets" in docker, "the secrets files would enter the image context"
    for path in files:
        values = read_env(path)
        assert all(values[k] == rendered.dotenv[k] for k in values), f"{path.name}: not .env's"
    for value in (v for k, v in rendered.dotenv.items() if k in SECRET_KEYS):
        assert value not in rendered.secrets_output, "make k8s-secrets printed a secret"
    sources = [p for p in project.glob("deploy/**/*") if p.is_file() and "secrets" not in p.parts]
    for path in sources:
        text = path.read_text()
        assert not any(rendered.dotenv[k] in text for k in SECRET_KEYS), f"secret in {path}"
    assert f"{app}-api" in (project / "deploy/k8s/base/kustomization.yaml").read_text()


def test_k8s_secrets_refuses_a_missing_secret_and_writes_nothing(
    rendered: Rendered, project_python: str
) -> None:
    project = rendered.project
    before = {p: p.read_text() for p in project.glob("deploy/k8s/**/secrets/*.env")}
    done = run(["make", "k8s-secrets"], project, PYTHON=project_python, DB_DATA_PWD="")
    assert done.returncode != 0
    assert "DB_DATA_PWD is not set: add it to .env" in done.stderr
    assert {p: p.read_text() for p in before} == before, "a file changed on a refusal"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_kubernetes_validate_strict(rendered: Rendered, overlay: str, tool) -> None:
    readme = (rendered.project / "README.md").read_text()
    version = re.search(r"kubernetes-validate --strict -k (\d+\.\d+\.\d+)", readme)
    assert version, "the README names no Kubernetes version the manifests are validated for"
    argv = [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version[1]]
    done = run([*argv, str(rendered.files[overlay])], rendered.project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(rendered.docs[overlay]) >= 15


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_pod_gets_its_own_secrets_and_no_others(rendered: Rendered, overlay: str) -> None:
    """Read from the rendered pods, against PROCESS_SECRETS: the API never holds the admin's,
    the data role's or the superuser's password."""
    expected = {
        "api": rendered.process_secrets["api"],
        "worker": rendered.process_secrets["worker"],
        "migrate": rendered.process_secrets["migrate"],
    }
    if overlay == "dev":
        expected |= {"postgres": rendered.process_secrets["bootstrap"], **SERVER_SECRETS}
    pods = rendered.workloads(overlay)
    assert set(pods) == set(expected)
    for component, pod in pods.items():
        assert secret_keys(rendered, overlay, pod) == expected[component], component
    api = secret_keys(rendered, overlay, pods["api"])
    assert not api & {"DB_ADMIN_PWD", "DB_DATA_PWD", "DB_BOOTSTRAP_PWD"}
    for name, secret in rendered.objects(overlay, "Secret").items():
        for key, value in secret["data"].items():
            assert base64.b64decode(value).decode() == rendered.dotenv[key], f"{name}.{key}"
    for config in rendered.objects(overlay, "ConfigMap").values():
        text = json.dumps(config.get("data", {}))
        assert not any(rendered.dotenv[k] in text for k in SECRET_KEYS), "secret in ConfigMap"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_carry_env_example_names_and_defaults(rendered: Rendered, overlay: str) -> None:
    app, example = rendered.app, rendered.example
    settings = rendered.generated(overlay, "ConfigMap", f"{app}-settings")["data"]
    unknown = set(settings) - set(example) - set(NOT_IN_ENV_EXAMPLE)
    assert not unknown, f"settings .env.example does not know: {sorted(unknown)}"
    wanted = {
        k
        for k in example
        if k not in NOT_FOR_PODS and not k.startswith("FLYWAY_") and k not in SECRET_KEYS
    }
    assert wanted <= set(settings), f"never reach the pods: {sorted(wanted - set(settings))}"
    differ = CLUSTER_VALUES | (PROD_VALUES if overlay == "prod" else set())
    for key in wanted - differ:
        assert settings[key] == example[key], (
            f"{key}={settings[key]!r}, .env.example {example[key]!r}"
        )
    migrate = rendered.generated(overlay, "ConfigMap", f"{app}-migrate-settings")["data"]
    assert set(migrate) == {k for k in example if k.startswith("FLYWAY_")} - set(NOT_FOR_PODS)
    for key in set(migrate) - {"FLYWAY_URL", "FLYWAY_LOCATIONS"}:
        assert migrate[key] == example[key], key
    if overlay == "prod":
        assert settings["DB_SSLMODE"] == "verify-full" and settings["REDIS_SSL"] == "true"
        assert "sslmode=verify-full" in migrate["FLYWAY_URL"]
        assert settings["REDIS_SENTINELS"] == "" and settings["REDIS_SENTINEL_MASTER"] == ""
    pods = rendered.workloads(overlay)
    for component in ("api", "worker"):
        (container,) = pods[component]["spec"]["containers"]
        refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
        assert [r.rsplit("-", 1)[0] for r in refs] == [f"{app}-settings"]
        assert not container.get("env"), f"{component}: settings outside the ConfigMap"


def test_migrations_and_bootstrap_are_compose_s_files(rendered: Rendered) -> None:
    project, app = rendered.project, rendered.app
    migrations = rendered.generated("dev", "ConfigMap", f"{app}-migrations")["data"]
    sql = {p.name: p.read_text() for p in (project / "deploy/db-deploy/sql").glob("*.sql")}
    assert migrations == sql, "the migration Job's SQL differs from deploy/db-deploy/sql"
    bootstrap = rendered.generated("dev", "ConfigMap", f"{app}-postgres-bootstrap")["data"]
    assert bootstrap == {
        "bootstrap.sql": (project / "deploy/postgres/bootstrap.sql").read_text(),
        "10-bootstrap.sh": (project / "deploy/postgres/initdb.d/10-bootstrap.sh").read_text(),
    }
    postgres = rendered.workloads("dev")["postgres"]["spec"]["containers"][0]
    env = {v["name"]: v.get("value") for v in postgres["env"]}
    for key in ("DB_NAME", "DB_SCHEMA", "DB_ADMIN_USER", "DB_DATA_USER", "DB_APP_USER"):
        assert env[key] == rendered.example[key], key
    assert env["POSTGRES_USER"] == rendered.example["DB_BOOTSTRAP_USER"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_and_probed(rendered: Rendered, overlay: str) -> None:
    assert {"/health", "/api/v1/ready"} <= rendered.paths, "the probes' routes are gone"
    for component, pod in rendered.workloads(overlay).items():
        spec = pod["spec"]
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, component
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, component
        assert spec["automountServiceAccountToken"] is False, component
        # Writable: emptyDir volumes, and the dev servers' claims (volumeClaimTemplates).
        writable = {v["name"] for v in spec["volumes"] if "emptyDir" in v} | {"data"}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, component
            assert sc["readOnlyRootFilesystem"] is True, component
            assert sc["capabilities"] == {"drop": ["ALL"]}, component
            for level in ("requests", "limits"):
                assert set(container["resources"][level]) == {"cpu", "memory"}, component
            for mount in container.get("volumeMounts", []):
                if not mount.get("readOnly"):
                    assert mount["name"] in writable, (component, mount)
    (api,) = rendered.workloads(overlay)["api"]["spec"]["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/api/v1/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    namespace = next(iter(rendered.objects(overlay, "Namespace").values()))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    hpa = rendered.objects(overlay, "HorizontalPodAutoscaler")
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpa.values()] == [f"{rendered.app}-worker"]
    assert (
        "replicas" not in rendered.objects(overlay, "Deployment")[f"{rendered.app}-worker"]["spec"]
    )
    pdbs = rendered.objects(overlay, "PodDisruptionBudget")
    assert {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for p in pdbs.values()
    } == {"api", "worker"}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


DNS = {"k8s-app": "kube-dns"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_only_postgres_redis_and_dns(
    rendered: Rendered, overlay: str
) -> None:
    pods = {c: p["metadata"]["labels"] for c, p in rendered.workloads(overlay).items()}
    reach = {"api": {"postgres", "redis"}, "worker": {"postgres", "redis"}, "migrate": {"postgres"}}
    ports = {"postgres": {5432}, "redis": {6379, 6380, 26379}}
    policies = rendered.objects(overlay, "NetworkPolicy")
    for component, wanted in reach.items():
        policy = policies[f"{rendered.app}-{component}"]["spec"]
        assert matches(policy["podSelector"]["matchLabels"], pods[component]), component
        assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
        reached, dns = set(), False
        for rule in policy["egress"]:
            assert rule.get("to") and rule.get("ports"), f"{component}: an egress rule allows all"
            rule_ports = {p["port"] for p in rule["ports"]}
            for peer in rule["to"]:
                selector = peer.get("podSelector", {}).get("matchLabels")
                if selector == DNS:
                    assert peer["namespaceSelector"]["matchLabels"] == {
                        "kubernetes.io/metadata.name": "kube-system"
                    }
                    assert rule_ports == {53}
                    dns = True
                    continue
                if overlay == "dev":
                    assert "ipBlock" not in peer and "namespaceSelector" not in peer
                    target = [c for c, labels in pods.items() if matches(selector, labels)]
                else:
                    assert set(peer) == {"ipBlock"}, f"{component}: {peer}"
                    target = [t for t, p in ports.items() if rule_ports <= p]
                assert len(target) == 1 and rule_ports <= ports[target[0]], (component, peer)
                reached.add(target[0])
        assert dns and reached == wanted, f"{overlay} {component} reaches {reached}"
    if overlay == "dev":
        for server, clients in (
            ("postgres", {"api", "worker", "migrate"}),
            ("redis", {"api", "worker"}),
        ):
            (rule,) = policies[f"{rendered.app}-{server}"]["spec"]["ingress"]
            allowed = {
                c
                for c, labels in pods.items()
                for peer in rule["from"]
                if matches(peer["podSelector"]["matchLabels"], labels)
            }
            assert allowed == clients, server


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_first_rollout_step_holds_the_job_and_what_it_needs(
    rendered: Rendered, overlay: str
) -> None:
    """README: `kubectl apply -l 'rollout-phase!=app'` first, the Job to completion, then all."""
    first = [
        d
        for d in rendered.docs[overlay]
        if d["metadata"].get("labels", {}).get("rollout-phase") != "app"
    ]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in first}
    later = [d for d in rendered.docs[overlay] if d not in first]
    assert {d["kind"] for d in later} == {"Deployment"} and len(later) == 2
    job = rendered.workloads(overlay)["migrate"]
    needs = {
        ("Secret", v["valueFrom"]["secretKeyRef"]["name"])
        for v in job["spec"]["containers"][0]["env"]
    }
    needs |= {
        ("ConfigMap", s["configMapRef"]["name"]) for s in job["spec"]["containers"][0]["envFrom"]
    }
    needs |= {
        ("ConfigMap", v["configMap"]["name"]) for v in job["spec"]["volumes"] if "configMap" in v
    }
    assert needs <= kinds
    assert ("Job", f"{rendered.app}-migrate") in kinds


def test_images_come_from_kustomize_and_match_compose(rendered: Rendered, kubectl: str) -> None:
    """Every image is named in an `images:` entry, so an overlay can point it at a registry."""
    project, app = rendered.project, rendered.app
    compose = yaml.safe_load((project / "compose.yml").read_text())
    default = {}
    for service in compose["services"].values():
        image = re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", str(service.get("image", "")))
        default[image.split(":")[0].rsplit("/", 1)[-1]] = image
    images = {
        c["image"] for pod in rendered.workloads("dev").values() for c in pod["spec"]["containers"]
    }
    assert images == {
        f"{app}-api:local",
        f"{app}-worker:local",
        default["flyway"],
        default["postgres"],
        default["redis"],
    }
    mirror = project / "deploy/k8s/overlays/mirror"
    mirror.mkdir()
    entries = "".join(
        f"  - name: {name}\n    newName: mirror.example.com/{name}\n"
        for name in (f"{app}-api", f"{app}-worker", "flyway/flyway", "postgres", "redis")
    )
    (mirror / "kustomization.yaml").write_text(f"resources: [../dev]\nimages:\n{entries}")
    done = run([kubectl, "kustomize", str(mirror)], project)
    assert done.returncode == 0, done.stderr
    moved = re.findall(r"image: (\S+)", done.stdout)
    assert len(moved) == 5 and all(i.startswith("mirror.example.com/") for i in moved), moved
    shutil.rmtree(mirror)


def test_every_name_derives_from_the_app_code(cookies_session, kubectl, project_python) -> None:
    other = Rendered(bake(cookies_session, {"app_code": "billing42"}), kubectl, project_python)
    for overlay in OVERLAYS:
        for doc in other.docs[overlay]:
            name = doc["metadata"]["name"]
            assert name.startswith("billing42-"), f"{overlay}: {doc['kind']} {name}"
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == f"billing42-{overlay}"
        assert "aserv" not in other.files[overlay].read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_at_most_stay_within_the_roles_connection_limits(
    rendered: Rendered, overlay: str
) -> None:
    """(Most pods + the one a rollout adds) x DB_POOL_MAX_SIZE <= the role's CONNECTION LIMIT."""
    app = rendered.app
    sql = (rendered.project / "deploy/postgres/bootstrap.sql").read_text()
    limit = {
        role: int(re.search(rf':"{role}_user" WITH[^;]*CONNECTION LIMIT (\d+)', sql)[1])
        for role in ("data", "app")
    }
    pool = int(
        rendered.generated(overlay, "ConfigMap", f"{app}-settings")["data"]["DB_POOL_MAX_SIZE"]
    )
    deployments = rendered.objects(overlay, "Deployment")
    (hpa,) = rendered.objects(overlay, "HorizontalPodAutoscaler").values()
    most = {
        "app": deployments[f"{app}-api"]["spec"]["replicas"],
        "data": hpa["spec"]["maxReplicas"],
    }
    for role, name in (("app", "api"), ("data", "worker")):
        surge = deployments[f"{app}-{name}"]["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        assert (most[role] + surge) * pool <= limit[role], f"{name}: {most[role]}+{surge} pods"
