"""deploy/kubernetes/{sidecar,shared}: every manifest parses, every embedded mcp-oauthd
config passes the real config loader, and everything the manifests name (probe paths,
ports, ConfigMaps, Secrets keys, Services, the ingress-nginx auth-url) exists in the code
or in the recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from mcp_oauthd.config.models import Config, RedisStorageConfig, ServerConfig
from mcp_oauthd.oauth.metadata import PRM_WELL_KNOWN
from tests.deploy.recipes import (
    DEPLOY,
    STATE_DIR,
    build_app,
    identity_headers,
    kubernetes_objects,
    load_recipe_config,
    required_env,
    route_exists,
)

RECIPES = ["sidecar", "shared"]
MCP_OAUTHD_IMAGE_USER = 10001  # the Dockerfile's USER


class Recipe:
    def __init__(self, name: str) -> None:
        self.folder = DEPLOY / "kubernetes" / name
        self.objects = [doc for _, doc in kubernetes_objects(self.folder)]
        kustomization = yaml.safe_load((self.folder / "kustomization.yaml").read_text())
        self.kustomization: dict[str, Any] = kustomization
        self.namespace: str = kustomization["namespace"]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")

    def oauthd_containers(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(pod spec, container) of every mcp-oauthd container."""
        return [
            (w["spec"]["template"]["spec"], c)
            for w in self.workloads()
            for c in w["spec"]["template"]["spec"]["containers"]
            if c["name"] == "mcp-oauthd"
        ]

    def config_text(self, pod: dict[str, Any], container: dict[str, Any]) -> str:
        """The config file the container is started with, from its ConfigMap volume."""
        args = container["args"]
        config_path = args[args.index("--config") + 1]
        mount = next(
            m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")
        )
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        configmap = self.named("ConfigMap", volume["configMap"]["name"])
        assert configmap is not None, (
            f"ConfigMap {volume['configMap']['name']} is not in the recipe"
        )
        key = config_path[len(mount["mountPath"]) + 1 :]
        text: str = configmap["data"][key]
        return text


@pytest.fixture(params=RECIPES)
def recipe(request: pytest.FixtureRequest) -> Recipe:
    return Recipe(request.param)


def config_of(recipe: Recipe, tmp_path: Path) -> tuple[str, Config]:
    [(pod, container)] = recipe.oauthd_containers()[:1]
    text = recipe.config_text(pod, container)
    return text, load_recipe_config(text, tmp_path)


def test_every_manifest_parses_and_the_kustomization_lists_them_all(recipe: Recipe) -> None:
    files = {p.name for p in recipe.folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(recipe.kustomization["resources"]) == files
    assert recipe.objects
    for obj in recipe.objects:
        assert obj["metadata"]["name"]
        assert "namespace" not in obj["metadata"]  # the kustomization sets it
    assert (recipe.folder / "README.md").is_file()


def test_the_embedded_config_is_valid_and_gets_every_variable_it_needs(
    recipe: Recipe, tmp_path: Path
) -> None:
    for pod, container in recipe.oauthd_containers():
        text = recipe.config_text(pod, container)
        config = load_recipe_config(text, tmp_path)
        given = {e["name"] for e in container.get("env", [])}
        assert required_env(text) <= given, "the config needs variables the pod does not set"
        # Secrets come from Secret references, never literal values in the manifest.
        for env in container.get("env", []):
            if any(w in env["name"] for w in ("SECRET", "KEY", "PASSWORD", "REDIS_URL")):
                assert "secretKeyRef" in env.get("valueFrom", {}), env["name"]
        assert config.server.port == ServerConfig.model_fields["port"].default


def test_the_shared_recipe_uses_redis_with_keys_from_a_secret(tmp_path: Path) -> None:
    recipe = Recipe("shared")
    _, config = config_of(recipe, tmp_path)
    assert isinstance(config.storage, RedisStorageConfig)
    assert config.security.encryption_keys and config.security.cookie_secret is not None
    [deployment] = recipe.of_kind("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert recipe.named("StatefulSet", "redis") is not None
    assert recipe.named("Service", "redis") is not None


def test_the_sidecar_recipe_runs_an_mcp_server_next_to_mcp_oauthd(tmp_path: Path) -> None:
    recipe = Recipe("sidecar")
    [deployment] = recipe.of_kind("Deployment")
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"mcp-server", "mcp-oauthd"}
    _, config = config_of(recipe, tmp_path)
    env = {e["name"]: e.get("value") for e in containers["mcp-server"]["env"]}
    # The MCP server introspects over loopback in the pod, as the resource config says.
    assert urlsplit(env["OAUTHD_INTROSPECTION_URL"]).hostname == "127.0.0.1"
    assert urlsplit(env["OAUTHD_INTROSPECTION_URL"]).port == config.server.port
    assert env["OAUTHD_ISSUER"] == config.issuer
    resource = config.resource(env["MCP_RESOURCE"])
    assert resource is not None
    assert resource.introspection_client_id == env["MCP_CLIENT_ID"]
    assert set(env["MCP_REQUIRED_SCOPES"].split()) <= set(resource.scopes)
    # SQLite on one volume: never two pods at once.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert config.storage.type == "sqlite"
    assert str(config.storage.path).startswith(str(tmp_path))  # i.e. under STATE_DIR


async def test_probes_point_at_health_endpoints_that_exist(recipe: Recipe, tmp_path: Path) -> None:
    _, config = config_of(recipe, tmp_path)
    app = build_app(config)
    for _pod, container in recipe.oauthd_containers():
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == config.server.port
        assert ports["metrics"] == config.observability.metrics.port
        probes = {k: container[k] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in probes.values():
            get = probe["httpGet"]
            assert await route_exists(app, get["path"]), get["path"]
            assert ports.get(get["port"], get["port"]) == config.server.port


def test_every_container_is_locked_down_and_has_a_memory_limit(recipe: Recipe) -> None:
    for workload in recipe.workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod.get("automountServiceAccountToken") is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["capabilities"]["drop"] == ["ALL"], container["name"]
            assert container["resources"]["limits"]["memory"], container["name"]
    for pod, container in recipe.oauthd_containers():
        assert pod["securityContext"]["runAsUser"] == MCP_OAUTHD_IMAGE_USER
        assert pod["terminationGracePeriodSeconds"] > 20  # > server.shutdown_timeout
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", STATE_DIR} <= mounts  # the only writable places


def test_every_secret_key_used_is_created_by_the_readme(recipe: Recipe) -> None:
    readme = (recipe.folder / "README.md").read_text()
    for workload in recipe.workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert f"secret generic {ref['name']}" in readme, ref["name"]
                    assert f"--from-literal={ref['key']}=" in readme, ref["key"]


def test_services_and_ingresses_point_at_ports_that_exist(recipe: Recipe) -> None:
    pod_ports: dict[str, set[Any]] = {}
    for workload in recipe.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        key = labels["app.kubernetes.io/name"]
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for port in container.get("ports", []):
                pod_ports.setdefault(key, set()).update({port["name"], port["containerPort"]})
    for service in recipe.of_kind("Service"):
        selected = service["spec"]["selector"]["app.kubernetes.io/name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in pod_ports[selected], (service["metadata"]["name"], port)
    for ingress in recipe.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = recipe.named("Service", backend["name"])
                if service is None:
                    # Only the user's own MCP server may live outside the recipe.
                    assert backend["name"] == "files-mcp", backend
                    continue
                names = {p["name"] for p in service["spec"]["ports"]}
                numbers = {p["port"] for p in service["spec"]["ports"]}
                port = backend["port"]
                assert port.get("name") in names or port.get("number") in numbers, backend


async def test_the_auth_url_annotation_asks_the_verify_endpoint_for_a_configured_resource(
    tmp_path: Path,
) -> None:
    recipe = Recipe("shared")
    _, config = config_of(recipe, tmp_path)
    app = build_app(config)
    annotated = [
        i
        for i in recipe.of_kind("Ingress")
        if "nginx.ingress.kubernetes.io/auth-url" in i["metadata"].get("annotations", {})
    ]
    assert annotated
    service = recipe.named("Service", "mcp-oauthd")
    assert service is not None
    for ingress in annotated:
        annotations = ingress["metadata"]["annotations"]
        url = urlsplit(annotations["nginx.ingress.kubernetes.io/auth-url"])
        assert url.hostname == f"mcp-oauthd.{recipe.namespace}.svc.cluster.local"
        assert url.port in {p["port"] for p in service["spec"]["ports"]}
        assert url.path == "/auth/verify"
        assert await route_exists(app, url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        resource = config.resource(query["resource"])
        assert resource is not None, query["resource"]
        assert set(query["scope"].split()) <= set(resource.scopes)
        passed = set(annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(","))
        assert passed == identity_headers()
        # The protected host serves the resource, and its RFC 9728 metadata path goes to
        # mcp-oauthd (through a second, unauthenticated Ingress on the same host).
        [rule] = ingress["spec"]["rules"]
        assert rule["host"] == urlsplit(resource.uri).hostname
        [protected] = rule["http"]["paths"]
        assert urlsplit(resource.uri).path.startswith(protected["path"])
        discovery = [
            (r, p)
            for i in recipe.of_kind("Ingress")
            for r in i["spec"]["rules"]
            for p in r["http"]["paths"]
            if r["host"] == rule["host"] and p["path"].startswith(PRM_WELL_KNOWN)
        ]
        assert discovery
        for _, path in discovery:
            assert path["backend"]["service"]["name"] == "mcp-oauthd"
        prm = PRM_WELL_KNOWN + urlsplit(resource.uri).path
        assert await route_exists(app, prm)


async def test_the_sidecar_ingress_sends_everything_but_the_mcp_path_to_mcp_oauthd(
    tmp_path: Path,
) -> None:
    recipe = Recipe("sidecar")
    _, config = config_of(recipe, tmp_path)
    app = build_app(config)
    [ingress] = recipe.of_kind("Ingress")
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == urlsplit(config.issuer).hostname
    by_path = {p["path"]: p["backend"]["service"]["port"]["name"] for p in rule["http"]["paths"]}
    assert by_path == {"/mcp": "mcp", "/": "mcp-oauthd"}
    for path in ("/.well-known/oauth-authorization-server", "/oauth/authorize", "/login"):
        assert await route_exists(app, path), path
    assert await route_exists(app, "/oauth/token", "POST")
    assert await route_exists(app, PRM_WELL_KNOWN + "/mcp")
