"""The ONNX version an edge module serves: the one named, or one converted on the way as ``%onnx`` converts.

A version that is not ONNX is converted with the engine behind ``%onnx`` (:func:`mlops_magics.onnx.convert.
convert_model`: the same converters, the same parity check against the original on the registered input example
or given rows, the same tolerances) and registered as ``%onnx`` registers it: the next version of the same model,
flavor ``onnx``, ``derived_from`` the original, tagged ``onnx.source``, with its conversion report, in one
transaction. A conversion that fails the parity check is refused, never served. A conversion registered before
(same source, parity passed) is used again rather than registered twice.

``quantize="int8"`` quantizes the float ONNX version's weights with onnxruntime's dynamic quantization, checks the
int8 model against the float one (label agreement, largest probability or value difference, and accuracy on
labels when given) and registers it as the next version, ``derived_from`` the float one, with that report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from html import escape
from typing import Any

from mlops_magics import display, flavors, signature
from mlops_magics.errors import ConversionError, InvalidInputError
from mlops_magics.onnx import convert
from mlops_magics.onnx.report import OnnxReport
from mlops_magics.registry import Lineage, ModelVersion, Registry, lineage
from mlops_magics.registry.trust import require_trusted

QUANTIZATIONS = ("int8",)


@dataclass(frozen=True)
class QuantizationReport:
    """How the int8 model compares with the float model it was quantized from, on the same rows."""

    float_ref: str
    int8_ref: str | None
    kind: str  # classifier, regressor or other
    rows: int
    #: Share of rows where both give the same label (classifiers).
    label_agreement: float | None
    #: Largest difference between the two models' probabilities (classifiers) or values (regressors).
    max_abs_difference: float | None
    #: Accuracy of each on the labels given (None without labels; classifiers only).
    float_accuracy: float | None
    int8_accuracy: float | None
    float_bytes: int
    int8_bytes: int
    passed: bool
    min_agreement: float = convert.QUANTIZED_MIN_AGREEMENT

    def as_dict(self) -> dict[str, Any]:
        """The report as stored with the int8 version."""
        return asdict(self)

    def lines(self) -> list[str]:
        """The findings, one per line."""
        found = [f"{self.rows} rows"]
        if self.label_agreement is not None:
            found.append(f"labels agree {self.label_agreement:.1%} (at least {self.min_agreement:.0%} needed)")
        if self.max_abs_difference is not None:
            found.append(f"max abs difference {self.max_abs_difference:.2e}")
        accuracy = ""
        if self.float_accuracy is not None and self.int8_accuracy is not None:
            accuracy = f"accuracy float {self.float_accuracy:.3f} -> int8 {self.int8_accuracy:.3f}"
        size = (f"model {self.float_bytes:,} -> {self.int8_bytes:,} bytes "
                f"({self.int8_bytes / max(self.float_bytes, 1):.0%})")
        return [f"int8 vs float: {'PASSED' if self.passed else 'FAILED'}: " + ", ".join(found),
                *([accuracy] if accuracy else []), size]

    def __repr__(self) -> str:
        head = (f"int8 quantization of {self.float_ref}: "
                f"{'registered as ' + self.int8_ref if self.int8_ref else 'not registered'}")
        return "\n  ".join([head, *self.lines()])

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.passed else "#c62828"
        rows = [{"measure": "label agreement", "float": "", "int8": _share(self.label_agreement)},
                {"measure": "max abs difference", "float": "", "int8": _number(self.max_abs_difference)},
                {"measure": "accuracy", "float": _number(self.float_accuracy), "int8": _number(self.int8_accuracy)},
                {"measure": "model bytes", "float": f"{self.float_bytes:,}", "int8": f"{self.int8_bytes:,}"}]
        outcome = (f"registered as <strong>{escape(self.int8_ref)}</strong>" if self.int8_ref
                   else "<strong>not registered</strong>")
        return (f"<div><p>int8 quantization of <strong>{escape(self.float_ref)}</strong>: {outcome}</p>"
                f"<p style=\"color:{colour}\">{escape(self.lines()[0])}</p>{display.table(rows)}</div>")


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class EdgeModel:
    """The version an edge module serves, what it came from, and the conversions made (or found) for it."""

    source: ModelVersion
    version: ModelVersion
    conversion: OnnxReport | Mapping[str, Any] | None = None
    quantization: QuantizationReport | None = None
    #: The versions registered now (empty when everything was registered before).
    registered: tuple[str, ...] = ()


def _find(registry: Registry, name: str, tags: Mapping[str, str], *, quantized: bool) -> ModelVersion | None:
    """The newest ONNX version of ``name`` with ``tags``, registered with its parity passed (not forced)."""
    found = [v for v in registry.find(name, dict(tags))
             if v.flavor == "onnx" and "onnx.parity" not in v.tags and ("onnx.quantized" in v.tags) == quantized]
    return max(found, key=lambda v: v.version, default=None)


def _register(registry: Registry, proto: Any, source: ModelVersion, *, derived_from: ModelVersion, description: str,
              tags: Mapping[str, str], report_kind: str, report: Mapping[str, Any],
              provenance: Lineage | None) -> ModelVersion:
    """Register ``proto`` as ``%onnx`` registers a conversion: next version, derived, tagged, report, one write."""
    sample = signature.rebuild(dict(source.input_example)) if source.input_example else None
    sig, example = signature.infer(proto, sample) if sample is not None else (None, None)
    if provenance is None:
        provenance = lineage.capture(script=lineage.running_script(), derived_from=derived_from.ref)
    else:
        provenance = Lineage(**{**provenance.as_dict(), "derived_from": derived_from.ref})
    with registry.write(), registry.artifacts.stage() as staging:
        saved = flavors.save_object(proto, staging.folder, "onnx")
        new = registry.add_version(source.name, staging.finish(), flavor=saved.flavor, flavor_options=saved.options,
                                   framework=saved.framework, framework_version=saved.framework_version,
                                   tags=dict(tags), description=description, signature=sig, input_example=example,
                                   lineage=provenance, origin="object", trusted=True)
        registry.set_report(new, report_kind, dict(report))
    return new


def _check_rows(version: ModelVersion, data: Any) -> Any:
    if data is not None:
        return data
    if version.input_example is None:
        raise InvalidInputError(f"{version.ref} has no registered input example to check the ONNX conversion on: "
                                "pass data= (rows to check on), or register it with --sample.")
    return signature.rebuild(dict(version.input_example))


def _float_version(registry: Registry, version: ModelVersion, data: Any, provenance: Lineage | None,
                   budget: float) -> tuple[ModelVersion, OnnxReport | Mapping[str, Any] | None, bool]:
    """(the float ONNX version, its conversion report, whether it was registered now)."""
    if version.flavor == "onnx":
        return version, None, False
    found = _find(registry, version.name, {"onnx.source": version.ref}, quantized=False)
    if found is not None:
        return found, registry.reports(found).get("onnx"), False
    require_trusted(version, "load")
    model = flavors.get_flavor(version.flavor).load(registry.verified_artifact(version), version.flavor_options,
                                                    trusted=version.trusted)
    proto, report = convert.convert_model(model, _check_rows(version, data), source=version.ref, budget=budget)
    if not report.parity.passed:
        raise ConversionError(f"The ONNX conversion of {version.ref} does not agree with it ({report.parity_line()}), "
                              "so it is not served on the device. Check it with %onnx "
                              f"{version.ref} --data X (the rows where they differ are shown), or deploy an ONNX "
                              "version you registered yourself.")
    label = f"ONNX ({report.converter}, opset {report.opset}) of {version.ref}"
    new = _register(registry, proto, version, derived_from=version, description=label,
                    tags={"onnx.source": version.ref}, report_kind="onnx", report=report.as_dict(),
                    provenance=provenance)
    registered = OnnxReport(source=report.source, converter=report.converter, opset=report.opset, quantized=None,
                            parity=report.parity, speed=report.speed, registered=new.ref, notes=report.notes)
    return new, registered, True


def _session(proto: Any) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def compare_quantized(float_proto: Any, int8_proto: Any, data: Any, labels: Any = None, *, float_ref: str,
                      kind: str | None = None) -> QuantizationReport:
    """Score ``data`` with both models and compare them (and each with ``labels``, when given)."""
    import numpy as np

    sessions = [_session(float_proto), _session(int8_proto)]
    outputs = [s.run(None, convert.onnx_feed(s, data)) for s in sessions]
    first = [np.asarray(o[0]) for o in outputs]
    if kind is None:
        kind = "classifier" if first[0].dtype.kind in "iuSUO" or len(outputs[0]) > 1 else "regressor"
    rows = len(first[0])
    agreement = difference = float_accuracy = int8_accuracy = None
    if kind == "classifier":
        agreement = float(np.mean(first[0].reshape(-1) == first[1].reshape(-1))) if rows else 1.0
        if len(outputs[0]) > 1 and rows:
            difference = float(np.max(np.abs(np.asarray(outputs[0][1], dtype=np.float64)
                                              - np.asarray(outputs[1][1], dtype=np.float64))))
        if labels is not None:
            truth = np.asarray(labels).reshape(-1)
            float_accuracy = float(np.mean(first[0].reshape(-1) == truth))
            int8_accuracy = float(np.mean(first[1].reshape(-1) == truth))
        passed = agreement >= convert.QUANTIZED_MIN_AGREEMENT
    else:
        a, b = (f.astype(np.float64).reshape(rows, -1) for f in first)
        diff = np.abs(a - b)
        difference = float(diff.max()) if rows else 0.0
        passed = bool(np.all(diff <= convert.ATOL_SCALE * float(np.std(a) or 1.0) + convert.QUANTIZED_RTOL * np.abs(a)))
    return QuantizationReport(float_ref=float_ref, int8_ref=None, kind=kind, rows=rows, label_agreement=agreement,
                              max_abs_difference=difference, float_accuracy=float_accuracy,
                              int8_accuracy=int8_accuracy, float_bytes=float_proto.ByteSize(),
                              int8_bytes=int8_proto.ByteSize(), passed=passed)


def _int8_version(registry: Registry, source: ModelVersion, float_version: ModelVersion, data: Any, labels: Any,
                  provenance: Lineage | None) -> tuple[ModelVersion, QuantizationReport, bool]:
    if float_version.tags.get("onnx.quantized"):
        stored = registry.reports(float_version).get("quantization")
        if stored is None:
            raise InvalidInputError(f"{float_version.ref} is quantized already ({float_version.tags['onnx.quantized']}"
                                    "): deploy it without quantize, or quantize its float version.")
        return float_version, QuantizationReport(**stored), False
    found = _find(registry, source.name, {"onnx.quantized_from": float_version.ref}, quantized=True)
    if found is not None and "quantization" in registry.reports(found):
        return found, QuantizationReport(**registry.reports(found)["quantization"]), False
    float_proto = flavors.get_flavor("onnx").load(registry.verified_artifact(float_version),
                                                  float_version.flavor_options)
    int8_proto = convert.quantize_int8(float_proto)
    origin = registry.get(float_version.tags.get("onnx.source", float_version.ref))
    kind = registry.reports(float_version).get("onnx", {}).get("parity", {}).get("kind")
    report = compare_quantized(float_proto, int8_proto, _check_rows(origin, data), labels,
                               float_ref=float_version.ref, kind=kind)
    if not report.passed:
        raise ConversionError(f"The int8 model disagrees with {float_version.ref} too much to be served: "
                              f"{report.lines()[0]}. Deploy without --quantize.")
    new = _register(registry, int8_proto, source, derived_from=float_version,
                    description=f"ONNX int8 (onnxruntime dynamic quantization) of {float_version.ref}",
                    tags={"onnx.source": float_version.tags.get("onnx.source", float_version.ref),
                          "onnx.quantized": "int8", "onnx.quantized_from": float_version.ref},
                    report_kind="quantization", report={**report.as_dict(), "int8_ref": None},
                    provenance=provenance)
    return new, QuantizationReport(**{**report.as_dict(), "int8_ref": new.ref}), True


def served_version(
    registry: Registry,
    ref: str,
    *,
    quantize: str | None = None,
    data: Any = None,
    labels: Any = None,
    provenance: Lineage | None = None,
    budget: float = 0.25,
) -> EdgeModel:
    """The ONNX version to serve for ``ref``: itself when ONNX, else its conversion (found or made now).

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
        quantize: ``"int8"``: serve an int8 quantization of the float ONNX version (found or made now).
        data: rows to check the conversions on (default: the registered input example).
        labels: the rows' labels, for the int8 model's accuracy beside the float model's.
        provenance: lineage for versions registered now (captured here when omitted).
        budget: seconds spent timing each measure of the conversion report.

    Raises:
        NotFoundError: no such model.
        InvalidInputError: an unknown ``quantize``; no rows to check a conversion on.
        UntrustedModelError: converting would load an untrusted pickle.
        ConversionError: no converter, a failed parity check, or nothing to quantize.
    """
    if quantize not in (None, *QUANTIZATIONS):
        raise InvalidInputError(f"--quantize {quantize!r} is not supported: use {', '.join(QUANTIZATIONS)}.")
    source = registry.get(ref)
    float_version, conversion, converted = _float_version(registry, source, data, provenance, budget)
    registered = (float_version.ref,) if converted else ()
    if quantize is None:
        return EdgeModel(source, float_version, conversion, None, registered)
    int8, report, quantized = _int8_version(registry, source, float_version, data, labels, provenance)
    return EdgeModel(source, int8, conversion, report, registered + ((int8.ref,) if quantized else ()))
