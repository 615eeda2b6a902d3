"""A version's quality: validation gates, ONNX conversion, resource profiling. The API behind %validate, %onnx
and %profile; each stores its report with the version.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlops_magics import signature, validation
from mlops_magics.api.deployments import deploy, undeploy
from mlops_magics.api.models import load_model, register
from mlops_magics.errors import InvalidInputError, MlopsError
from mlops_magics.onnx.convert import convert_model
from mlops_magics.onnx.report import OnnxReport
from mlops_magics.packaging import engine
from mlops_magics.profiling import profile as profiling
from mlops_magics.registry import Lineage, Registry, or_default
from mlops_magics.registry.trust import require_trusted
from mlops_magics.targets.client import request_body


def validate(
    ref: str,
    data: Any,
    labels: Any,
    *,
    metrics: Sequence[str],
    functions: Mapping[str, Callable[[Any, Any], float]] | None = None,
    baseline: str | None = None,
    max_regression: float = 0.0,
    namespace: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
) -> validation.ValidationReport:
    """Compute metrics of a version on (data, labels), check thresholds and a baseline, store the verdict.

    The verdict is stored as the version's ``validation`` report, and the metrics it measured as the version's
    measured metrics (source ``validation``, replacing those of its previous validation), in one transaction.

    Gated aliases (``set_alias(..., require_validation=True)``) and ``deploy(..., require_validation=True)``
    then accept the version only if this passed.

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
        metrics: checks such as ``"accuracy>=0.9"``, or bare metric names (computed and shown).
        functions: user metrics by name, each ``f(y_true, y_pred) -> float``.
        baseline: a version to compare with (e.g. ``iris@production``); no metric with a known direction
            may be worse by more than ``max_regression``.
        namespace: where to find user metrics the checks name (a notebook's variables): each callable there
            whose name a check uses and that is not a built-in metric.

    Raises:
        InvalidInputError: no checks, a malformed check, an unknown metric, data and labels of different
            lengths, or a negative ``max_regression``.
        NotFoundError: no such model or baseline.
    """
    validation.check_arguments(data, labels, metrics=metrics, max_regression=max_regression)
    if namespace is not None:
        functions = {**validation.named_functions(metrics, namespace), **(functions or {})}
    reg = or_default(registry)
    version = reg.get(ref)
    candidate = validation.Predictor(load_model(version.ref, registry=reg), version.flavor)
    against = None
    if baseline:
        base_version = reg.get(baseline)
        against = (base_version.ref,
                   validation.Predictor(load_model(base_version.ref, registry=reg), base_version.flavor))
    report = validation.assess(candidate, data, labels, model=version.ref, metrics=metrics, functions=functions,
                               baseline=against, max_regression=max_regression)
    with reg.write():  # the report and the metrics it measured: both or neither
        reg.set_report(version, "validation", report.as_dict())
        reg.record_measured_metrics(version, report.metrics, source="validation",
                                    detail={"rows": report.rows, "data_sha256": report.data_sha256})
    return report


def to_onnx(
    ref: str,
    *,
    opset: int | None = None,
    quantize: str | None = None,
    data: Any = None,
    force: bool = False,
    budget: float = 1.0,
    provenance: Lineage | None = None,
    registry: Registry | None = None,
) -> OnnxReport:
    """Convert a registered model to ONNX, check and time it beside the original, and register it.

    The ONNX model is registered as the next version of the same model (flavor ``onnx``, ``derived_from`` the
    original), with its report, in one transaction, only when it agrees with the original within the
    tolerance (or ``force``).

    Args:
        ref: ``NAME`` (latest), ``NAME:VERSION`` or ``NAME@ALIAS``.
        opset: the ONNX opset (default: the converter's newest supported).
        quantize: ``"int8"`` applies onnxruntime's dynamic quantization (weights of MatMul/Gemm).
        data: the rows to check parity on and to time (default: the registered input example).
        force: register even when parity fails the tolerance.
        budget: seconds spent timing each of the four measures.
        provenance: where the conversion runs, for the new version's lineage (the magic passes the notebook
            and cell, as ``%register`` does); captured here when omitted. ``derived_from`` is the original.

    Returns:
        The report; ``report.registered`` names the new version (None when parity failed).

    Raises:
        NotFoundError: no such model.
        InvalidInputError: no data given and no input example registered; an unknown ``quantize``.
        ConversionError: no converter for the model, or a step that cannot be converted (named).
    """
    if quantize not in (None, "int8"):
        raise InvalidInputError(f"--quantize {quantize!r} is not supported: use int8.")
    reg = or_default(registry)
    version = reg.get(ref)
    if version.flavor == "onnx":
        raise InvalidInputError(f"{version.ref} is already an ONNX model.")
    if data is None:
        if version.input_example is None:
            raise InvalidInputError(f"{version.ref} has no registered input example: pass --data EXPR (rows to check "
                                    "and time on), or register it with --sample.")
        data = signature.rebuild(dict(version.input_example))
    proto, report = convert_model(load_model(version.ref, registry=reg), data, source=version.ref, opset=opset,
                                  quantize=quantize, budget=budget)
    if not report.parity.passed and not force:
        return report
    label = (f"ONNX ({report.converter}, opset {report.opset}{', int8' if quantize else ''}) of {version.ref}")
    sample = signature.rebuild(dict(version.input_example)) if version.input_example else None
    tags = {"onnx.source": version.ref, **({"onnx.quantized": quantize} if quantize else {}),
            **({"onnx.parity": "forced"} if not report.parity.passed else {})}
    with reg.write():  # the new version and its report: both or neither
        new = register(proto, version.name, derived_from=version.ref, description=label, sample=sample, tags=tags,
                       provenance=provenance, registry=reg)
        report = OnnxReport(source=report.source, converter=report.converter, opset=report.opset,
                            quantized=quantize, parity=report.parity, speed=report.speed, registered=new.ref,
                            notes=report.notes)
        reg.set_report(new, "onnx", report.as_dict())
    return report


def profile(
    ref: str,
    data: Any,
    *,
    configs: str | Sequence[dict[str, Any]] = "cpu=0.5,memory=512m; cpu=1,memory=1g",
    concurrency: str | Sequence[int] = (1, 4, 16),
    duration: float = 10.0,
    slo_p95_ms: float | None = None,
    target: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    registry: Registry | None = None,
) -> profiling.ProfileReport:
    """Deploy a version under each resource configuration, load it, measure, recommend; store the report.

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
        data: one request's data (rows), sent as ``{"data": rows}`` by every request.
        configs: resource configurations (``"cpu=0.5,memory=512m; cpu=1,memory=1g"`` or dicts).
        concurrency: connections per load level (or ``"1,4,16"``); the highest is the target load.
        duration: seconds of load per level.
        slo_p95_ms: the p95 latency a configuration must keep at the target load (None: any).
        target: ``docker`` or ``local`` (default: docker when an engine is reachable).
        progress: called with (what, done, total) as configurations and levels complete.

    Raises:
        InvalidInputError: malformed configurations or concurrency levels.
        NotFoundError: no such model.
        UntrustedModelError: serving the version could run code from its artifact and it is not trusted.
    """
    if isinstance(configs, str):
        configs = profiling.parse_configs(configs)
    if isinstance(concurrency, str):
        concurrency = profiling.parse_levels(concurrency)
    levels = tuple(sorted(set(concurrency)))
    if not levels or min(levels) < 1:
        raise InvalidInputError(f"--concurrency {concurrency} is invalid: give levels of 1 or more, e.g. 1,4,16.")
    if duration <= 0:
        raise InvalidInputError(f"--duration {duration} is invalid: give seconds, e.g. 10.")
    reg = or_default(registry)
    version = reg.get(ref)
    require_trusted(version)  # each configuration's deploy would refuse it too: say so once, not as a failed profile
    notes: list[str] = []
    if target is None:
        available, why = engine.available()
        target = "docker" if available else "local"
        if not available:
            notes.append(f"no Docker engine ({why.split('(')[0].strip()}): measured as one local process, without "
                         "the CPU and memory limits")
    limits = target == "docker"
    plan = list(configs) if limits else [{"cpu": None, "memory": None}]
    roomiest = max(range(len(plan)), key=lambda j: (plan[j]["cpu"] or 0, plan[j]["memory"] or ""))
    total = len(plan) * len(levels)
    done = [0]  # levels measured so far, for the progress callback
    results: list[dict[str, Any]] = []
    load_generator: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlops-profile-") as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(request_body(data))
        for i, config in enumerate(plan):
            service = f"profile-{version.name}-{i + 1}"
            requested = {"requestedCpu": config["cpu"], "requestedMemoryInGB": (
                profiling.gigabytes(profiling.memory_bytes(config["memory"])) if config["memory"] else None)}

            def step(what: str, c: dict[str, Any] = config) -> None:
                if progress is not None:
                    progress(f"cpu={c['cpu']}, memory={c['memory']}: {what}", done[0], total)

            step("deploying")
            try:
                deployment = deploy(version.ref, target=target, name=service, cpu=config["cpu"],
                                             memory=config["memory"], registry=reg)
            except MlopsError as exc:
                reason = str(exc).splitlines()[0]
                results.append({**requested, **profiling.failed(reason)})
                done[0] += len(levels)
                continue
            try:
                probe = (profiling.ContainerProbe(str(deployment.config["container"])) if limits
                         else profiling.ProcessProbe(int(deployment.config["pid"])))
                measured = profiling.measure_config(deployment, probe, body, levels, duration, step)
                done[0] += len(levels)
                if i == roomiest and measured["successRate"] == 1.0:  # the server least likely to be the limit
                    load_generator = {**profiling.ceiling(deployment, body, levels[-1], min(duration, 5.0)),
                                      **requested}
                results.append({**requested, **measured})
            except MlopsError as exc:
                results.append({**requested, **profiling.failed(str(exc).splitlines()[0])})
            finally:
                undeploy(service, registry=reg)
    if progress is not None:
        progress("done", total, total)
    report = profiling.recommend(version.ref, target, limits, levels, duration, slo_p95_ms, results,
                                 load_generator, notes)
    reg.set_report(version, "profile", report.as_dict())
    return report
