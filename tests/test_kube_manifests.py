"""The Kubernetes target's objects, without a cluster: settings (ours and Azure's AKS names), names, and the
manifests validated against Kubernetes' own schemas (1.25 to 1.37, strict) with kubernetes-validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.errors import EngineError, InvalidInputError
from mlops_magics.packaging.spec import DeploySpec, deploy_spec
from mlops_magics.registry import Registry
from mlops_magics.targets.kube import manifests
from mlops_magics.targets.kube.manifests import Layout
from mlops_magics.targets.kube.settings import AKS_NAMES, KubeSettings, autoscale_bounds, settings

VERSIONS = [f"1.{minor}.0" for minor in range(25, 38)]


@pytest.fixture
def spec(registry: Registry, iris_lr: Any) -> DeploySpec:
    mm.register(iris_lr, "Iris_Model.v2", registry=registry)
    return deploy_spec(registry, "Iris_Model.v2", "Iris_Model.v2:1", auth=True, collect=True, workers=2)


def layout(**changes: Any) -> Layout:
    values: dict[str, Any] = {"image": "mlops/iris:1-0123456789ab", "port": 5001, "uid": 1000, "gid": 1000,
                              "host_data": "/home/me/.mlops/deployments/iris/volume/data", "keys_digest": "ab" * 32}
    return Layout(**{**values, **changes})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("how", [
    {"autoscale": True, "min_replicas": 1, "max_replicas": 4, "cpu_limit": 1, "memory_gb_limit": 1},
    {"network": "host", "replicas": 2, "port": 41001},
    {"data_volume": "none", "read_only_root": False},
    {"storage_class": "azurefile-csi", "autoscale": True},
], ids=["autoscaled-pod-network", "host-network", "no-volume", "claim"])
def test_every_manifest_validates_strictly_for_kubernetes_1_25_to_1_37(spec: DeploySpec, version: str,
                                                                       how: dict[str, Any]) -> None:
    chosen = settings(how)
    objects = manifests.manifests(spec, chosen, layout(port=chosen.port or 5001), keys=("k1" * 16, "k2" * 16))
    assert [o["kind"] for o in objects][:2] == ["Namespace", "Secret"]
    for body in objects:
        kubernetes_validate.validate(body, version, strict=True)  # raises on any unknown or wrong field


@pytest.mark.parametrize("version", ["1.25.0", "1.37.0"])
def test_the_claims_reader_pod_validates(version: str) -> None:
    pod = manifests.reader("Iris_Model.v2", "mlops", "mlops/iris:1-abc", 10001, 10001)
    kubernetes_validate.validate(pod, version, strict=True)
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": manifests.object_name(
        "Iris_Model.v2") + "-data", "readOnly": True}


def test_an_hpa_for_a_cluster_without_autoscaling_v2_validates_as_v2beta2(spec: DeploySpec) -> None:
    hpa = manifests.autoscaler(spec, settings({"autoscale": True}), layout(hpa_api="autoscaling/v2beta2"))
    kubernetes_validate.validate(hpa, "1.25.0", strict=True)  # 1.25 is the last to serve v2beta2
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(hpa, "1.26.0", strict=True)


def test_the_server_runs_in_the_app_root_as_on_azure(spec: DeploySpec) -> None:
    from mlops_magics.packaging.context import APP_ROOT

    body = manifests.deployment(spec, settings({}), layout())
    server = next(c for c in body["spec"]["template"]["spec"]["containers"] if c["name"] == "mlops-serve")
    assert server["workingDir"] == APP_ROOT  # relative paths in scripts resolve there (the server keeps it)


def test_names_and_labels_are_what_kubernetes_accepts_and_stay_distinct() -> None:
    assert manifests.object_name("iris") == "iris"
    changed = manifests.object_name("Iris_Model.v2")
    assert changed.startswith("iris-model-v2-") and len(changed) == len("iris-model-v2-") + 6
    assert manifests.object_name("iris_model") != manifests.object_name("iris-model")
    assert len(manifests.object_name("a" * 128)) <= 53
    assert manifests.label_value("iris") == "iris" and len(manifests.label_value("x" * 128)) <= 63
    assert manifests.label_value("model-") != "model-" and manifests.label_value("model-")[-1].isalnum()


def test_the_pod_runs_unprivileged_and_keys_never_reach_the_environment_or_the_command_line(
        spec: DeploySpec) -> None:
    body = manifests.deployment(spec, settings({"auth": True}), layout())
    pod = body["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "MLOPS_AUTH_KEY_FILE", "value": f"{manifests.KEYS}/keys"} in server["env"]
    text = repr(body)
    assert "k1k1" not in text and "--auth-key " not in " ".join(server["command"])
    secret = manifests.secret(spec, settings(), ("k1" * 16, "k2" * 16))
    assert secret["stringData"] == {"keys": "k1" * 16 + "\n" + "k2" * 16 + "\n"}
    assert "stringData" not in manifests.secret(spec, settings(), None)  # what --dry-run writes: no key


def test_rolling_updates_never_take_a_serving_pod_away_and_host_pods_declare_no_port(spec: DeploySpec) -> None:
    body = manifests.deployment(spec, settings({"network": "host", "port": 41001}), layout(port=41001))
    assert body["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = body["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert pod["hostNetwork"] is True and "ports" not in server  # a declared host port would block the surge pod
    # an HTTP probe on the shared port would be answered by the old pod: the new pod's own ready file counts
    assert server["readinessProbe"]["exec"] == server["startupProbe"]["exec"] == {
        "command": ["test", "-f", manifests.READY_FILE]}
    assert manifests.READY_FILE in server["command"]
    assert server["livenessProbe"]["httpGet"] == {"path": "/", "port": 41001, "host": "127.0.0.1"}
    assert server["command"][server["command"].index("--host") + 1] == "127.0.0.1"
    # Any pod on the port answers an HTTP probe: a new pod is started when its own server wrote its ready file.
    ready = server["command"][server["command"].index("--ready-file") + 1]
    assert ready.startswith("/tmp/") and ready in " ".join(server["startupProbe"]["exec"]["command"])
    assert "httpGet" in manifests.deployment(spec, settings(), layout())["spec"]["template"]["spec"][
        "containers"][0]["readinessProbe"]  # with pod networking each pod has its own address
    assert pod["volumes"][1]["hostPath"]["path"].endswith("/deployments/iris/volume/data")
    assert "--collect-dir" in server["command"]


def test_without_collection_no_data_volume_is_asked_for(registry: Registry, iris_lr: Any) -> None:
    # A claim nobody writes to once kept pods Pending on clusters without a provisioner (or without
    # ReadWriteMany, with several replicas) for a service that collects nothing.
    mm.register(iris_lr, "iris", registry=registry)
    quiet = deploy_spec(registry, "iris", "iris:1")
    for how in ({"autoscale": True}, {"network": "host"}):
        objects = manifests.manifests(quiet, settings(how), layout())
        pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        expected = ["Namespace", "Deployment", "Service"] + (["HorizontalPodAutoscaler"] if "autoscale" in how else [])
        assert [o["kind"] for o in objects] == expected, how
        assert [v["name"] for v in pod["volumes"]] == ["tmp"] and "fsGroup" not in pod["securityContext"], how
        assert "--collect-dir" not in pod["containers"][0]["command"], how
        # the data folder is named only where it is mounted (on the read-only root it cannot be made)
        assert "MLOPS_DATA_DIR" not in {e["name"] for e in pod["containers"][0]["env"]}, how
    collecting = deploy_spec(registry, "iris", "iris:1", collect=True)
    objects = manifests.manifests(collecting, settings(), layout())
    assert "PersistentVolumeClaim" in [o["kind"] for o in objects]
    container = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "MLOPS_DATA_DIR", "value": manifests.DATA} in container["env"]
    assert {"name": "data", "mountPath": manifests.DATA} in container["volumeMounts"]


def test_the_autoscaler_owns_the_replica_count(spec: DeploySpec) -> None:
    fixed = manifests.deployment(spec, settings({"replicas": 3}), layout())
    scaled = manifests.deployment(spec, settings({"autoscale": True, "replicas": 3}), layout())
    assert fixed["spec"]["replicas"] == 3 and "replicas" not in scaled["spec"]
    hpa = manifests.autoscaler(spec, settings({"autoscale_min_replicas": 2, "autoscale_max_replicas": 5,
                                               "autoscale_target_utilization": 60,
                                               "autoscale_refresh_seconds": 15}), layout())
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["periodSeconds"] == 15


def test_every_aks_setting_maps_to_one_of_ours() -> None:
    ours = {f for f in KubeSettings.__dataclass_fields__}
    assert {value for value in AKS_NAMES.values() if value is not None} <= ours
    aks = settings({"num_replicas": 2, "cpu_cores": 0.5, "memory_gb": 1, "cpu_cores_limit": "1",
                    "memory_gb_limit": 2, "auth_enabled": "true", "scoring_timeout_ms": 5000,
                    "replica_max_concurrent_requests": 2, "max_request_wait_time": 800, "period_seconds": 5,
                    "initial_delay_seconds": 1, "timeout_seconds": 3, "success_threshold": 2,
                    "failure_threshold": 4, "collect_model_data": True, "namespace": "models"})
    assert (aks.replicas, aks.cpu, aks.memory_gb, aks.cpu_limit, aks.memory_gb_limit) == (2, 0.5, 1.0, 1.0, 2.0)
    assert (aks.auth, aks.collect, aks.namespace) == (True, True, "models")
    assert (aks.period_seconds, aks.success_threshold, aks.failure_threshold) == (5, 2, 4)


def test_auth_and_collection_asked_for_as_settings_shape_the_objects(registry: Registry, iris_lr: Any) -> None:
    # Azure's auth_enabled / collect_model_data (and our auth / collect) do what --auth / --collect do: once they
    # were recorded as on while the pods served without a key and collected nothing.
    mm.register(iris_lr, "iris", registry=registry)
    for options in ({"auth_enabled": "true", "collect_model_data": "true"}, {"auth": True, "collect": True}):
        written = api.kubernetes_manifests("iris", target_options=options, validate=False, registry=registry)
        by_kind = {body["kind"]: body for body in written.objects}
        server = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert "Secret" in by_kind, options
        assert {"name": "MLOPS_AUTH_KEY_FILE", "value": f"{manifests.KEYS}/keys"} in server["env"], options
        assert "--collect-dir" in server["command"], options


@pytest.mark.parametrize(("options", "message"), [
    ({"replica": 2}, r"Unknown Kubernetes setting 'replica'. Did you mean 'replicas'"),
    ({"min_replicas": 5, "max_replicas": 2, "autoscale": True}, r"the minimum is above the maximum"),
    ({"cpu": 0}, r"cpu=0.0 must be above 0"),
    ({"cpu": 1, "cpu_limit": 0.5}, r"cpu_limit=0.5 is below cpu=1"),
    ({"namespace": "My_NS"}, r"Namespace 'My_NS' is not a valid Kubernetes name"),
    ({"replicas": "two"}, r"replicas='two' is not a whole number"),
    ({"auth": "maybe"}, r"auth='maybe' is not true or false"),
    ({"data_volume": "host"}, r"data_volume='host' keeps collected data in a folder of the node"),
    ({"image_registry": "not a registry"}, r"is not HOST\[:PORT\]/REPO"),
    ({"target_utilization": 0}, r"give a percent"),
])
def test_bad_settings_say_what_is_wrong(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        settings(options)


def test_autoscale_bounds_are_min_comma_max() -> None:
    assert autoscale_bounds("1,4") == (1, 4) and autoscale_bounds(" 2 , 3 ") == (2, 3)
    with pytest.raises(InvalidInputError, match=r"--autoscale '4' is not MIN,MAX"):
        autoscale_bounds("4")


# -- through the magic, without a cluster ---------------------------------------------------


def test_dry_run_writes_validated_manifests_and_no_key(ip: Any, iris_lr: Any, tmp_path: Path) -> None:
    import yaml

    ip.user_ns.update(clf=iris_lr)
    ip.run_line_magic("register", "clf --name iris")
    written = ip.run_line_magic("deploy", f"iris --target kubernetes --autoscale 1,4 --auth --collect "
                                          f"--set cpu_cores=0.25 --namespace models --dry-run {tmp_path / 'k8s'}")
    names = sorted(p.name for p in (tmp_path / "k8s").iterdir())
    assert names == ["01-namespace-models.yaml", "02-secret-iris-keys.yaml",
                     "03-persistentvolumeclaim-iris-data.yaml", "04-deployment-iris.yaml", "05-service-iris.yaml",
                     "06-horizontalpodautoscaler-iris.yaml"]
    assert repr(written).startswith("Wrote Namespace/models, Secret/iris-keys, ") and "Nothing was applied." in repr(
        written) and "valid for Kubernetes 1.25 to 1.37" in repr(written)
    for path in (tmp_path / "k8s").iterdir():
        body = yaml.safe_load(path.read_text())
        kubernetes_validate.validate(body, "1.37.0", strict=True)
    secret = (tmp_path / "k8s" / "02-secret-iris-keys.yaml").read_text()
    assert secret.startswith("# The keys are not written") and not {"data", "stringData"} & set(yaml.safe_load(secret))
    deployment = yaml.safe_load((tmp_path / "k8s" / "04-deployment-iris.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "250m"
    assert ip.run_line_magic("deployments", "") == []  # nothing was deployed or recorded


def test_kubernetes_flags_belong_to_the_kubernetes_target(ip: Any, iris_lr: Any) -> None:
    ip.user_ns.update(clf=iris_lr)
    ip.run_line_magic("register", "clf --name iris")
    with pytest.raises(UsageError, match=r"are for --target kubernetes"):
        ip.run_line_magic("deploy", "iris --replicas 3")
    with pytest.raises(UsageError, match=r"--set 'cpu' is not KEY=VALUE"):
        ip.run_line_magic("deploy", "iris --target kubernetes --set cpu --dry-run /tmp/never")
    with pytest.raises(UsageError, match=r"Unknown Kubernetes setting 'cpu_core'. Did you mean 'cpu_cores'"):
        ip.run_line_magic("deploy", "iris --target kubernetes --set cpu_core=1 --dry-run /tmp/never")


def test_no_cluster_is_one_clear_error_saying_what_was_tried(registry: Registry, iris_lr: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    mm.register(iris_lr, "iris", registry=registry)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(EngineError, match=r"No Kubernetes cluster is configured: the kubeconfig .*missing-kubeconfig "
                                          r"could not be read"):
        api.deploy("iris", target="kubernetes", registry=registry)
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(DEAD_KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(dead))
    with pytest.raises(EngineError, match=r"did not answer while asking its version: context 'dead' "
                                          r"\(https://127.0.0.1:9, kubeconfig .*dead-kubeconfig\).*Is the cluster"):
        api.deploy("iris", target="kubernetes", registry=registry)
    with pytest.raises(EngineError, match=r"No context 'nope' in .*dead-kubeconfig. .*Contexts: dead"):
        api.deploy("iris", target="kubernetes", target_options={"context": "nope"}, registry=registry)
    assert api.list_deployments(registry=registry) == [] and not registry.keys.root.exists()


DEAD_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: dead
  cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}
users:
- name: dead
  user: {token: not-a-real-token}
contexts:
- name: dead
  context: {cluster: dead, user: dead}
current-context: dead
"""


def test_pods_ask_for_what_the_profile_recommended_unless_told(registry: Registry, iris_lr: Any) -> None:
    version = mm.register(iris_lr, "iris", registry=registry)
    registry.set_report(version, "profile", {"limits_applied": True, "recommendedCpu": 0.75,
                                             "recommendedMemoryInGB": 0.3})
    profiled = api.kubernetes_manifests("iris", registry=registry).objects
    told = api.kubernetes_manifests("iris", target_options={"cpu_cores": 0.2}, registry=registry).objects
    requests = [next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "resources"]["requests"] for objects in (profiled, told)]
    assert requests == [{"cpu": "750m", "memory": "307Mi"}, {"cpu": "200m", "memory": "512Mi"}]


def test_the_readme_says_what_every_aks_setting_becomes() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("| AKS setting |"):]
    table = table[:table.index("\n\n")]
    missing = [name for name in AKS_NAMES if f"`{name}`" not in table]
    assert not missing, f"README's AKS table lacks {missing}"
