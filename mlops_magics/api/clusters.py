"""Kubernetes beyond deploy: the manifests a deployment would apply (``%deploy --dry-run``), what an apply would
change (``--diff``), and scaling a running service (``%scale``)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlops_magics.errors import ConflictError, InvalidInputError, NotFoundError
from mlops_magics.packaging.spec import deploy_spec
from mlops_magics.registry import Deployment, Registry, or_default, parse_ref
from mlops_magics.registry.refs import check_name
from mlops_magics.targets.kube import manifests, rollout
from mlops_magics.targets.kube.cluster import connect
from mlops_magics.targets.kube.settings import autoscale_bounds, settings

__all__ = ["ManifestSet", "autoscale_bounds", "kubernetes_diff", "kubernetes_manifests", "kubernetes_options", "scale"]
from mlops_magics.targets.kube.target import ROLLOUT_TIMEOUT, KubernetesTarget

#: The Kubernetes versions dry-run manifests are validated for (kubernetes-validate's schemas, strict).
VALIDATED_VERSIONS = tuple(f"1.{minor}.0" for minor in range(25, 38))


@dataclass(frozen=True)
class ManifestSet:
    """The objects a Kubernetes deployment applies, the files they were written to, the versions they validate for."""

    service: str
    objects: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    validated: tuple[str, ...] = ()

    def yaml(self) -> str:
        """Every object, as one multi-document YAML text."""
        return str(yaml.safe_dump_all(self.objects, sort_keys=False))

    def __repr__(self) -> str:
        kinds = ", ".join(manifests.kinds(self.objects))
        where = f" to {self.files[0].parent}/ ({len(self.files)} files)" if self.files else ""
        checked = (f"; valid for Kubernetes {self.validated[0].rsplit('.', 1)[0]} to "
                   f"{self.validated[-1].rsplit('.', 1)[0]} (strict schemas)" if self.validated else "")
        return f"Wrote {kinds}{where}{checked}. Nothing was applied." if self.files else (
            f"{kinds}{checked}. Nothing was applied.")


def kubernetes_options(target: str, items: Sequence[str] = (), *, autoscale: str | None = None,
                       replicas: int | None = None, target_utilization: int | None = None,
                       namespace: str | None = None, context: str | None = None,
                       image_registry: str | None = None, plan: bool = False) -> dict[str, Any]:
    """The Kubernetes settings that the flags of ``%deploy`` / ``mlops deploy`` give (``items`` are ``--set
    KEY=VALUE``; ``plan``: ``--dry-run`` or ``--diff`` was given).

    Raises:
        InvalidInputError: a malformed item, bad ``--autoscale``, or Kubernetes flags for another target.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise InvalidInputError(f"--set {item!r} is not KEY=VALUE (e.g. --set cpu_cores=0.5).")
        options[key.strip()] = value.strip()
    flags = {"replicas": replicas, "target_utilization": target_utilization, "namespace": namespace,
             "context": context, "image_registry": image_registry}
    options.update({key: value for key, value in flags.items() if value is not None})
    if autoscale is not None:
        low, high = autoscale_bounds(autoscale)
        options.update(autoscale=True, min_replicas=low, max_replicas=high)
    if (options or plan) and target != "kubernetes":
        raise InvalidInputError("--replicas, --autoscale, --target-utilization, --namespace, --context, --registry, "
                                "--set, --dry-run and --diff are for --target kubernetes.")
    return options


def _spec(reg: Registry, ref: str, name: str | None, options: Mapping[str, Any], **spec_options: Any) -> Any:
    service = check_name(name or parse_ref(ref).name)
    return deploy_spec(reg, service, ref, target_options=dict(options), **spec_options)


def kubernetes_manifests(ref: str, *, name: str | None = None, write_to: str | Path | None = None,
                         target_options: Mapping[str, Any] | None = None, auth: bool = False, collect: bool = False,
                         workers: int = 1, port: int | None = None, validate: bool = True,
                         registry: Registry | None = None) -> ManifestSet:
    """The objects deploying ``ref`` on Kubernetes would apply, validated strictly for Kubernetes 1.25 to 1.37.

    Written as YAML to ``write_to`` (one file per object, ``NN-kind-name.yaml``) when given. Applies nothing,
    needs no cluster and builds no image; the Secret is written without its keys.

    Raises:
        InvalidInputError: a setting is wrong, or an object does not validate (with the version and the field).
    """
    reg = or_default(registry)
    spec = _spec(reg, ref, name, target_options or {}, auth=auth, collect=collect, workers=workers, port=port)
    _, _, objects = KubernetesTarget(reg).plan(spec)
    validated: tuple[str, ...] = ()
    if validate:
        import kubernetes_validate

        for version in VALIDATED_VERSIONS:
            for body in objects:
                try:
                    kubernetes_validate.validate(body, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    raise InvalidInputError(f"{body['kind']}/{body['metadata']['name']} is not valid for Kubernetes "
                                            f"{version}: {exc.message} (at {'.'.join(map(str, exc.path))}).") from None
        validated = VALIDATED_VERSIONS
    files: list[Path] = []
    if write_to is not None:
        folder = Path(write_to).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        for number, body in enumerate(objects, 1):
            path = folder / f"{number:02d}-{body['kind'].lower()}-{body['metadata']['name']}.yaml"
            text = yaml.safe_dump(body, sort_keys=False)
            if body["kind"] == "Secret":
                text = ("# The keys are not written here: %deploy creates them (mlops keys SERVICE shows them).\n"
                        + text)
            fresh = path.with_name(f".{path.name}.tmp")
            fresh.write_text(text)
            fresh.replace(path)
            files.append(path)
    return ManifestSet(spec.service, objects, files, validated)


def kubernetes_diff(ref: str, *, name: str | None = None, target_options: Mapping[str, Any] | None = None,
                    auth: bool = False, collect: bool = False, workers: int = 1, port: int | None = None,
                    registry: Registry | None = None) -> str:
    """What deploying (or updating to) ``ref`` would change on the cluster, as a unified diff ('' for nothing).

    The diff compares the live objects with the server's dry-run apply of ours. Applies nothing. ``port`` is the
    one a new service would get (a live service keeps its own, as an update does).

    Raises:
        EngineError: no cluster answers.
    """
    reg = or_default(registry)
    spec = _spec(reg, ref, name, target_options or {}, auth=auth, collect=collect, workers=workers, port=port)
    target = KubernetesTarget(reg)
    chosen = target.settings(spec)
    cluster = target.cluster(chosen)
    live = {d.name: d for d in reg.deployments()}.get(spec.service)
    live_port: int | None = None  # None: the spec's, as a new deployment's
    keys: tuple[str, str] | None = None
    if live is not None and live.is_live and live.target == "kubernetes":
        live_port = int(live.config["port"])
        if chosen.auth:  # the live pods' template carries the digest of their keys: the same keys, the same template
            with contextlib.suppress(NotFoundError):  # deployed without --auth: the diff shows that change
                kept = reg.keys.get(spec.service)
                keys = (kept.primary, kept.secondary)
    _, _, objects = target.plan(spec, cluster=cluster, keys=keys, port=live_port)
    new_namespace = cluster.get("v1", "Namespace", chosen.namespace, None) is None  # then it is part of the change
    return cluster.diff([o for o in objects if o["kind"] != "Secret" and (o["kind"] != "Namespace" or new_namespace)])


def scale(name: str, *, replicas: int | None = None, autoscale: tuple[int, int] | None = None,
          target_utilization: int | None = None, registry: Registry | None = None) -> Deployment:
    """Set how many pods a Kubernetes service runs (``replicas``) or the autoscaler's bounds (``autoscale``).

    Blocks, as deploying does, until the pods asked for are ready (with ``autoscale``: the pods there are; the
    autoscaler moves within the bounds later).

    Raises:
        InvalidInputError: neither or both given, or out of range.
        ConflictError: the service is not a live Kubernetes deployment.
        DeployError: a new pod cannot start or no node can place it (the count is set: scale again to change it).
    """
    if (replicas is None) == (autoscale is None):
        raise InvalidInputError("Give --replicas N (a fixed count) or --autoscale MIN,MAX (the autoscaler's bounds).")
    reg = or_default(registry)
    d = reg.get_deployment(name)
    if d.target != "kubernetes" or not d.is_live:
        raise ConflictError(f"Service {name!r} is not a live Kubernetes deployment ({d.target}, {d.state}): "
                            "%scale applies to --target kubernetes.")
    recorded = dict(d.config.get("settings") or {})
    changes: dict[str, Any] = ({"replicas": replicas, "autoscale": False} if replicas is not None else
                               {"autoscale": True, "min_replicas": autoscale[0], "max_replicas": autoscale[1]}
                               if autoscale is not None else {})
    if target_utilization is not None:
        changes["target_utilization"] = target_utilization
    chosen = settings({**recorded, **changes})
    cluster = connect(chosen.context)
    objects = [o for o in d.config.get("objects") or [] if o.get("kind") == "Deployment"]
    if not objects:
        raise ConflictError(f"Service {name!r} was deployed by an older mlops-magics: %reload {name} first.")
    body = dict(objects[0])
    body["spec"] = {key: value for key, value in body["spec"].items() if key != "replicas"}
    if not chosen.autoscale:
        body["spec"]["replicas"] = chosen.replicas
    for api_version in ("autoscaling/v2", "autoscaling/v2beta2"):  # the old bounds go first
        if cluster.serves(api_version, "HorizontalPodAutoscaler") and not chosen.autoscale:
            cluster.delete(api_version, "HorizontalPodAutoscaler", str(d.config["object"]), chosen.namespace)
    cluster.apply(body)
    kept = [o for o in d.config["objects"] if o.get("kind") != "HorizontalPodAutoscaler"]
    spec = dataclasses.replace(deploy_spec(reg, d.name, f"{d.model_name}:{d.model_version}"),
                               target_options=dataclasses.asdict(chosen))
    if chosen.autoscale:
        layout = manifests.Layout(image=str(d.config["image"]), port=int(d.config["port"]), uid=0, gid=0,
                                  hpa_api=cluster.hpa_api())
        hpa = manifests.autoscaler(spec, chosen, layout)
        cluster.apply(hpa)
        kept.append(hpa)
    kept = [body if o.get("kind") == "Deployment" else o for o in kept]
    shown = {k: v for k, v in dataclasses.asdict(chosen).items() if k not in ("primary_key", "secondary_key")}
    scaled = reg.record_deployment(d.name, f"{d.model_name}:{d.model_version}", target=d.target, state=d.state,
                                   url=d.url, config={**d.config, "settings": shown, "objects": kept})
    rollout.wait(cluster, str(d.config["object"]), spec, chosen, timeout=ROLLOUT_TIMEOUT)
    return scaled
