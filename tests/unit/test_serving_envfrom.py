"""envFrom: ConfigMaps and Secrets applied with the services, refused by name when missing,
resolved as the kubelet does; resources.limits parsed; probe ports on the published port."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from serving.containers import detect_runtime
from serving.envsources import resolve_env_from
from serving.manifest import EnvFrom, ManifestError
from serving.manifest_loader import load_batch, load_manifests
from serving.podspec import PodPorts, build_pod_plan
from serving.state import ClusterState, StateStore, apply_manifests

SVC = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: localhost/hello:1
          command: [python3, app.py]
          envFrom:
            - configMapRef: {name: settings}
            - secretRef: {name: creds}
              prefix: DB_
          env:
            - name: MODE
              value: env-wins
"""
CONFIG = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  MODE: from-configmap
  GREETING: hi
  bad key: skipped
"""
SECRET = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: creds
data:
  PASSWORD: {base64.b64encode(b"s3cret").decode()}
stringData:
  USER: app
"""


def test_configmap_and_secret_apply_with_the_service_and_fill_the_environment() -> None:
    batch = load_batch("---\n".join([CONFIG, SECRET, SVC]), "all.yaml")
    (svc,) = batch.services
    assert svc.template.container.env_from == (
        EnvFrom("ConfigMap", "settings"),
        EnvFrom("Secret", "creds", "DB_"),
    )
    result = apply_manifests(ClusterState(), [(svc, "/")], batch.sources)
    assert result.messages == (
        "configmap/settings created",
        "secret/creds created",
        "service.serving.knative.dev/hello created",
    )
    pairs, skipped = resolve_env_from(svc.template.container, "default", result.state.sources)
    assert pairs == [("GREETING", "hi"), ("MODE", "from-configmap"),
                     ("DB_PASSWORD", "s3cret"), ("DB_USER", "app")]  # fmt: skip
    assert skipped == ["bad key"]
    plan = build_pod_plan(svc.template, namespace="default", service="hello",
                          revision="hello-00001", pod="p", ports=PodPorts(1, 2, 3, 4, 5, 6),
                          workdir="/", base_env={}, runtime=None, env_from=pairs)  # fmt: skip
    env = plan.user.env
    assert (env["MODE"], env["GREETING"], env["DB_PASSWORD"]) == ("env-wins", "hi", "s3cret")


def test_sources_survive_a_restart(tmp_path: Path) -> None:
    batch = load_batch("---\n".join([CONFIG, SECRET, SVC]))
    state = apply_manifests(ClusterState(), [(batch.services[0], "/")], batch.sources).state
    StateStore(tmp_path).save(state)
    assert StateStore(tmp_path).load().sources == state.sources


def test_envfrom_naming_an_unknown_object_is_refused_by_name() -> None:
    (svc,) = load_manifests(SVC)
    with pytest.raises(ManifestError) as info:
        apply_manifests(ClusterState(), [(svc, "/")], load_batch(CONFIG).sources)
    assert info.value.messages == (
        'Service default/hello: secrets "creds" not found in namespace "default" (apply it with '
        "the service, or mark it optional): "
        "spec.template.spec.containers[0].envFrom[1].secretRef.name",
    )
    optional = load_manifests(SVC.replace("{name: creds}", "{name: creds, optional: true}"))
    apply_manifests(ClusterState(), [(optional[0], "/")], load_batch(CONFIG).sources)


def test_bad_secret_and_kinds_are_refused_with_lines() -> None:
    with pytest.raises(ManifestError) as info:
        load_batch(SECRET.replace("PASSWORD: ", "PASSWORD: '!!'#"), "s.yaml")
    assert info.value.messages == (
        "s.yaml:6: invalid value: not base64-encoded UTF-8 text: data[PASSWORD]",
    )
    with pytest.raises(ManifestError, match='unknown field "datta"'):
        load_batch(CONFIG.replace("data:", "datta:"))
    with pytest.raises(ManifestError, match='unsupported kind "Deployment"'):
        load_batch("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")


def test_limits_are_kept_other_resources_warned_and_bad_quantities_refused() -> None:
    text = SVC.replace(
        "          env:\n",
        "          resources:\n            limits: {cpu: 500m, memory: 128Mi, nvidia.com/gpu: 1}\n"
        "            requests: {cpu: 100m}\n          env:\n",
    )
    (svc,) = load_manifests(text, "s.yaml")
    assert svc.template.container.limits == (("cpu", "500m"), ("memory", "128Mi"))
    assert svc.warnings == (
        "s.yaml:17: ignored by sluice (sluice runs no scheduler or cluster): "
        "spec.template.spec.containers[0].resources.requests",
        "s.yaml:16: ignored by sluice (only cpu and memory limits are applied): "
        "spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]",
    )
    with pytest.raises(ManifestError, match=r"invalid quantity \"lots\".*limits\[memory\]"):
        load_manifests(text.replace("128Mi", "lots"))


def test_probe_on_another_port_is_warned_about_and_sent_to_the_container_port() -> None:
    text = SVC.replace("          env:\n", "          readinessProbe: {tcpSocket: {port: 9000}}\n"
                       "          env:\n")  # fmt: skip
    (svc,) = load_manifests(text)
    assert svc.warnings[-1].endswith(
        "(the probe goes to the container port 8080, the only one published): "
        "spec.template.spec.containers[0].readinessProbe.tcpSocket.port"
    )


IMAGE_ONLY = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: localhost/hello:1
          ports: [{containerPort: 9000}]
          readinessProbe: {httpGet: {path: /healthz, port: 9000}}
"""


def test_container_probe_on_the_container_port_goes_to_the_published_port() -> None:
    (svc,) = load_manifests(IMAGE_ONLY)
    assert svc.warnings == ()
    rt = detect_runtime("podman", lambda name: f"/usr/bin/{name}")
    plan = build_pod_plan(svc.template, namespace="default", service="hello",
                          revision="hello-00001", pod="p", ports=PodPorts(41000, 2, 3, 4, 5, 6),
                          workdir="/", base_env={}, runtime=rt)  # fmt: skip
    probe = json.loads(plan.queue_proxy.env["SERVING_READINESS_PROBE"])
    assert probe["httpGet"] == {"path": "/healthz", "host": "127.0.0.1", "port": 41000}
    assert "127.0.0.1:41000:9000" in plan.user.argv
