"""The Kubernetes wiring of Alertmanager -> flipmoe (infra/kuberay): parsed and checked against each other.

No cluster (and no Helm in the OS packages): the manifests are read as YAML, the ConfigMap's flipmoe.yaml
as a `FlipmoeConfig`, and the names that tie them together (config path, mounts, secrets, the service URL)
are compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flipmoe.config import FlipmoeConfig, from_dict
from flipmoe.importers.backends import configured_backends

KUBERAY = Path(__file__).resolve().parents[1] / "infra" / "kuberay"


def _documents(name: str) -> dict[str, dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all((KUBERAY / name).read_text(encoding="utf-8")) if d]
    return {d["kind"]: d for d in documents}


def _pods(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"]
                                                             for g in cluster["workerGroupSpecs"]]


def test_the_configmap_is_a_valid_flipmoe_config_with_backends_and_targets() -> None:
    alerts = _documents("alerts.yaml")
    config = from_dict(FlipmoeConfig, yaml.safe_load(alerts["ConfigMap"]["data"]["flipmoe.yaml"]))
    assert set(configured_backends(config)) >= {"prometheus", "loki"}
    assert [t.kind for t in config.delivery.targets] == ["slack", "pagerduty"]
    assert all(t.url_secret.is_set or t.token.is_set for t in config.delivery.targets)  # no secret in the file


def test_every_pod_mounts_the_config_and_secrets_the_application_reads() -> None:
    alerts, service = _documents("alerts.yaml"), _documents("rayservice.yaml")["RayService"]
    application = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    config_path = Path(application["args"]["config"])
    config = from_dict(FlipmoeConfig, yaml.safe_load(alerts["ConfigMap"]["data"][config_path.name]))
    secret_files = [Path(t.token.file) for t in config.delivery.targets if t.token.file]
    secret_envs = {t.url_secret.env for t in config.delivery.targets if t.url_secret.env}
    for pod in _pods(service):
        volumes = {v["name"]: v for v in pod["volumes"]}
        container = pod["containers"][0]
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert mounts[str(config_path.parent)]["configMap"]["name"] == alerts["ConfigMap"]["metadata"]["name"]
        for path in secret_files:
            assert mounts[str(path.parent)]["secret"]["secretName"] == "flipmoe-delivery"
        assert secret_envs <= {e["name"] for e in container["env"]}


def test_alertmanager_posts_to_the_serve_service_with_a_token() -> None:
    alerts, service = _documents("alerts.yaml"), _documents("rayservice.yaml")["RayService"]
    receiver = alerts["AlertmanagerConfig"]["spec"]["receivers"][0]
    assert alerts["AlertmanagerConfig"]["spec"]["route"]["receiver"] == receiver["name"]
    webhook = receiver["webhookConfigs"][0]
    http = yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]
    assert webhook["url"] == f"http://{service['metadata']['name']}-serve-svc:{http['port']}/v1/alertmanager"
    assert webhook["httpConfig"]["authorization"]["credentials"]["name"] == "flipmoe-api"
