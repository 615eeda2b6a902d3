"""The ``fpga`` target: a network compiled for the EMULATED narrow-precision engine, served by the emulator through
the same ``mlops-serve`` contract, on the local runtime (a process, :class:`~mlops_magics.targets.local.LocalTarget`)
or the docker runtime (a container, :class:`~mlops_magics.targets.docker.DockerTarget`), which this target drives by
delegation: their processes, containers, logs, reloads and records are theirs, under the target name ``fpga``.

What is served is a registered version of its own, the *program version* (:func:`program_version`): the compiled
program as an artifact (``program/program.json`` + ``program/weights.npz``, see :mod:`mlops_magics.fpga.artifact`),
the next version of the same model, ``derived_from`` the ONNX version it was compiled from, tagged with the format
and the engine's native dimension, with the compile report (and the accuracy beside fp32, when rows were given) as
its ``fpga`` report. Its inference configuration is complete: the generated entry script (``init()`` loads the
program into the emulator, ``run()`` answers as the ONNX entry script does), the emulator's code as its assets, and
numpy + ml_dtypes as its environment, so that a container without mlops-magics serves it too.

The ONNX version comes from the model named as ``%onnx`` makes it (:func:`mlops_magics.edge.onnx_version.
served_version`: the same converter and parity check; a conversion registered before is used again). A program
compiled before for the same ONNX version, format, native dimension and vector format is used again.

Every latency is EMULATED (the latency model), never measured on an FPGA; see :mod:`mlops_magics.fpga`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_magics import flavors
from mlops_magics.authoring.environment import Environment
from mlops_magics.edge.onnx_version import served_version
from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga import artifact
from mlops_magics.fpga.compiler import Program, compile_model
from mlops_magics.fpga.formats import get_format
from mlops_magics.fpga.latency import Engine
from mlops_magics.fpga.report import FineTuneSummary, FpgaReport, assess, rows_of
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Deployment, Lineage, ModelVersion, Registry, lineage
from mlops_magics.targets.base import DeploymentTarget
from mlops_magics.targets.local import LocalTarget

#: How a program version is marked: the format (also what makes a version a program version), the ONNX version it
#: was compiled from, the native dimension, the vector format.
FORMAT_TAG, SOURCE_TAG, DIM_TAG, VECTOR_TAG = "fpga.format", "fpga.source", "fpga.native_dim", "fpga.vector_format"
#: How a fine-tuned ONNX version is marked: the epochs it was tuned for (what makes it one), its format (FORMAT_TAG)
#: and the ONNX version it was tuned from.
FINETUNED_TAG, TUNED_FROM_TAG = "fpga.finetuned", "fpga.tuned_from"
#: The settings of fine-tuning (:func:`mlops_magics.fpga.finetune.finetune`) that ``finetuned_program`` passes on.
FINETUNE_SETTINGS = ("learning_rate", "batch_size", "seed", "holdout")
PROGRAM_FOLDER = "program"
RUNTIMES = ("local", "docker")
#: The settings of this target (``target_options``): %deploy's --format, --native-dim, --runtime.
OPTIONS = ("format", "native_dim", "vector_format", "runtime")
DEFAULT_FORMAT = "mxfp8"
DEFAULT_NATIVE_DIM = 400


@dataclass(frozen=True)
class ProgramVersion:
    """The program version of a request, what it was compiled from, and whether it was registered now."""

    source: ModelVersion
    onnx: ModelVersion
    version: ModelVersion | None
    program: Program
    report: FpgaReport
    registered: bool


def is_program(version: ModelVersion) -> bool:
    """Whether ``version`` is a compiled FPGA program (registered by this target or ``%fpga compile``)."""
    return FORMAT_TAG in version.tags and version.flavor == "files"


def load_version_program(registry: Registry, version: ModelVersion) -> Program:
    """The program of a program version, read from its verified (hash-checked) artifact."""
    return artifact.load_program(registry.verified_artifact(version) / PROGRAM_FOLDER)


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The target's settings, checked: format (a known one), native_dim (>= 1), vector_format, runtime.

    Raises:
        InvalidInputError: an unknown setting or a bad value, saying what is accepted.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(f"--target fpga does not take {', '.join(unknown)}; its settings are "
                                f"{', '.join(OPTIONS)}.")
    checked = {k: v for k, v in options.items() if v is not None}
    if "format" in checked:
        checked["format"] = get_format(str(checked["format"])).name
    if "vector_format" in checked:
        checked["vector_format"] = get_format(str(checked["vector_format"])).name
    if "native_dim" in checked:
        try:
            checked["native_dim"] = int(checked["native_dim"])
        except (TypeError, ValueError):
            raise InvalidInputError(f"--native-dim {checked['native_dim']!r} is not a whole number.") from None
        if not 1 <= checked["native_dim"] <= 4096:
            raise InvalidInputError(f"--native-dim {checked['native_dim']} is out of range: give 1 to 4096 "
                                    "(Brainwave's is 400).")
    runtime = checked.get("runtime", "local")
    if runtime not in RUNTIMES:
        raise InvalidInputError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}.")
    return checked


def _onnx_of(registry: Registry, version: ModelVersion, data: Any, provenance: Lineage | None) -> ModelVersion:
    if is_program(version):
        return registry.get(version.tags[SOURCE_TAG])
    return served_version(registry, version.ref, data=data, provenance=provenance).version


def _find(registry: Registry, onnx: ModelVersion, tags: Mapping[str, str]) -> ModelVersion | None:
    found = [v for v in registry.find(onnx.name, dict(tags)) if is_program(v)]
    return max(found, key=lambda v: v.version, default=None)


def program_version(registry: Registry, ref: str, *, format: str | None = None, native_dim: int | None = None,
                    vector_format: str | None = None, engine: Engine | None = None, data: Any = None,
                    labels: Any = None, register: bool = True, provenance: Lineage | None = None,
                    rps_seconds: float = 0.0, finetune: FineTuneSummary | None = None) -> ProgramVersion:
    """The program version for ``ref`` compiled to ``format``: found (same ONNX version and settings) or compiled
    and registered now; with its report (accuracy beside fp32 on ``data`` / ``labels`` when given).

    ``ref`` may be a program version: with no other format or dimension asked for, it is served as it is; else its
    ONNX version is compiled again with the settings asked for.

    Args:
        format: the number format (default: the program version's own, else ``mxfp8``).
        native_dim: the engine's native dimension (default: the program version's own, else 400).
        vector_format: point-wise precision (default: fp32 for fp32, else bf16).
        engine: the engine of the emulated latency (default: Brainwave's, at the native dimension).
        data, labels: rows (and their labels) for the accuracy report; ``data`` also checks a conversion to ONNX.
        register: register a program that is not registered yet (False: compile and report only).
        rps_seconds: seconds to measure the emulator's requests/s for (0: not measured).
        finetune: what fine-tuning did, for the report, when ``ref`` is a fine-tuned ONNX version
            (:func:`finetuned_program`).

    Raises:
        NotFoundError: no such model.
        ConversionError: no ONNX version could be made, or an operator the engine does not support (named, with
            its node).
        InvalidInputError: a bad format, dimension, or rows that do not fit.
    """
    source = registry.get(ref)
    if is_program(source):
        own: tuple[str, int, str | None] = (source.tags[FORMAT_TAG], int(source.tags[DIM_TAG]),
                                            source.tags.get(VECTOR_TAG))
        asked = (None if format is None else get_format(format).name, native_dim,
                 None if vector_format is None else get_format(vector_format).name)
        if all(a is None or a == o for a, o in zip(asked, own, strict=True)):
            format, native_dim, vector_format = own
    fmt = get_format(format or DEFAULT_FORMAT)
    dim = native_dim or DEFAULT_NATIVE_DIM
    vfmt = get_format(vector_format or ("fp32" if fmt.is_exact else "bf16"))
    engine = dataclasses.replace(engine, native_dim=dim) if engine is not None else Engine(native_dim=dim)
    onnx_version = _onnx_of(registry, source, data, provenance)
    proto = flavors.get_flavor("onnx").load(registry.verified_artifact(onnx_version), onnx_version.flavor_options)
    tags = {FORMAT_TAG: fmt.name, SOURCE_TAG: onnx_version.ref, DIM_TAG: str(dim), VECTOR_TAG: vfmt.name}
    found = _find(registry, onnx_version, tags)
    if found is not None:
        program = load_version_program(registry, found)
    else:
        program = compile_model(proto, fmt, native_dim=dim, vector_format=vfmt)
    fp32 = program if fmt.is_exact else compile_model(proto, "fp32", native_dim=dim)
    report = assess(program, fp32, source=onnx_version.ref, engine=engine, data=data, labels=labels,
                    rps_seconds=rps_seconds, registered=found.ref if found is not None else None, finetune=finetune)
    if found is not None:
        if data is not None and register:
            registry.set_report(found, "fpga", report.as_dict())
        return ProgramVersion(source, onnx_version, found, program, report, False)
    if not register:
        return ProgramVersion(source, onnx_version, None, program, report, False)
    new = _register(registry, program, onnx_version, tags, report, provenance)
    report = dataclasses.replace(report, registered=new.ref)
    registry.set_report(new, "fpga", report.as_dict())
    return ProgramVersion(source, onnx_version, new, program, report, True)


def finetuned_program(registry: Registry, ref: str, *, epochs: int, train_data: Any, train_labels: Any,
                      format: str | None = None, native_dim: int | None = None, vector_format: str | None = None,
                      engine: Engine | None = None, data: Any = None, labels: Any = None,
                      allow_overlap: bool = False, settings: Mapping[str, Any] | None = None, register: bool = True,
                      provenance: Lineage | None = None, rps_seconds: float = 0.0) -> ProgramVersion:
    """Fine-tune the ONNX version of ``ref`` for ``format`` (quantization-aware), register the tuned weights, and
    compile them into the program version, whose report says what tuning did (``report.finetune``).

    The tuned ONNX model is registered as the next version of the model, ``derived_from`` the ONNX version it was
    tuned from, tagged ``fpga.finetuned`` (the epochs), ``fpga.format`` and ``fpga.tuned_from``, with the tuning's
    summary as its ``finetune`` report; the program compiled from it is the version after, as
    :func:`program_version` registers any. Each call tunes and registers anew (tuning is not looked up).

    Which rows measure what: the training rows train; the accuracy before and after tuning is measured on ``data``
    when it has ``labels`` (the same rows as the program's accuracy), else on a share of the training rows held out
    (``settings["holdout"]``, 0.2 by default) and never trained on. Training rows that are also ``data`` rows are
    refused unless ``allow_overlap`` (then the report counts them). The weights after the last epoch are kept: no
    epoch is chosen by its accuracy on the measured rows.

    Args:
        epochs: passes over the training rows (1 to 1000).
        train_data, train_labels: the training rows and their classes (required).
        settings: ``learning_rate``, ``batch_size``, ``seed``, ``holdout`` for
            :func:`~mlops_magics.fpga.finetune.finetune`.
        register: off: tune and compile, register nothing (the report's ``registered`` is None).
        format, native_dim, vector_format, engine, data, labels, provenance, rps_seconds: as for
            :func:`program_version` (format default: the program version's own, else ``mxfp8``).

    Raises:
        TorchMissingError: PyTorch is not installed (``pip install torch``).
        InvalidInputError: no training rows or labels, training rows among the measured rows, bad settings, rows
            that do not fit, labels that are not classes.
        NotFoundError, ConversionError: as for :func:`program_version`.
    """
    from mlops_magics.fpga import finetune as qat

    qat.require_torch()
    if train_data is None or train_labels is None:
        raise InvalidInputError(f"Fine-tuning ({epochs} epochs) trains on rows of its own: give the training rows "
                                "and their labels (--train-data X_train --train-labels y_train; finetune_data= and "
                                "finetune_labels= in Python), apart from the rows the accuracy is measured on.")
    unknown = sorted(set(settings or {}) - set(FINETUNE_SETTINGS))
    if unknown:
        raise InvalidInputError(f"Fine-tuning has no setting {', '.join(map(repr, unknown))}; its settings are "
                                f"{', '.join(FINETUNE_SETTINGS)}.")
    options = dict(settings or {})
    source = registry.get(ref)
    if format is None and is_program(source):
        format = source.tags[FORMAT_TAG]
    fmt = get_format(format or DEFAULT_FORMAT)
    vfmt = get_format(vector_format or ("fp32" if fmt.is_exact else "bf16"))
    onnx_version = _onnx_of(registry, source, data, provenance)
    proto = flavors.get_flavor("onnx").load(registry.verified_artifact(onnx_version), onnx_version.flavor_options)
    shape_of = compile_model(proto, "fp32")
    x_train = rows_of(train_data, shape_of, "train_data")
    x_data = None if data is None else rows_of(data, shape_of)
    overlap = 0 if x_data is None else qat.shared_rows(x_data, x_train)
    if overlap and not allow_overlap and x_data is not None:
        raise InvalidInputError(
            f"{overlap} of the {len(x_data)} rows the accuracy is measured on (--data) are also training rows "
            "(--train-data): the accuracy after fine-tuning would be measured on rows it was trained on. Give "
            "training rows apart from them (e.g. X_train and X_val of a split), or, to train on them anyway, "
            "--allow-overlap (finetune_overlap=True in Python): the report then says how many were trained on.")
    measured = x_data is not None and labels is not None
    tuned = qat.finetune(proto, fmt, x_train, train_labels, epochs=epochs, vector_format=vfmt,
                         validation=(x_data, labels) if measured else None, **options)
    if measured:
        assert x_data is not None
        trained = (f", {overlap} of them also trained on (allowed): the accuracy after is optimistic" if overlap
                   else ", none of them trained on")
        measured_on = f"the {len(x_data)} --data rows{trained}"
    else:
        why = "--data has no labels" if x_data is not None else "no --data rows"
        measured_on = (f"{tuned.validation_rows} training rows held out ({tuned.validation}), never trained on "
                       f"({why})")
    summary = FineTuneSummary(
        epochs=epochs, format=fmt.name, vector_format=vfmt.name, tuned_from=onnx_version.ref, tuned_version=None,
        train_rows=tuned.train_rows, measured_rows=tuned.validation_rows, measured_on=measured_on,
        overlap_rows=overlap if measured else 0, accuracy_before=tuned.accuracy_before,
        accuracy_after=tuned.accuracy_after, fp32_accuracy_before=tuned.fp32_accuracy_before,
        fp32_accuracy_after=tuned.fp32_accuracy_after, drop_before=tuned.drop_before, drop_after=tuned.drop_after,
        fp32_change=tuned.fp32_change, learning_rate=tuned.learning_rate, batch_size=tuned.batch_size,
        seed=tuned.seed, seconds=tuned.seconds,
        history=tuple({"epoch": e.epoch, "loss": e.loss, "train_accuracy": e.train_accuracy, "accuracy": e.accuracy,
                       "seconds": e.seconds} for e in tuned.history))
    if not register:
        dim = native_dim or DEFAULT_NATIVE_DIM
        program = compile_model(tuned.model, fmt, native_dim=dim, vector_format=vfmt)
        fp32 = compile_model(tuned.model, "fp32", native_dim=dim)
        engine = dataclasses.replace(engine, native_dim=dim) if engine is not None else Engine(native_dim=dim)
        report = assess(program, fp32, source=f"{onnx_version.ref} fine-tuned for {fmt.name} (not registered)",
                        engine=engine, data=data, labels=labels, rps_seconds=rps_seconds, finetune=summary)
        return ProgramVersion(source, onnx_version, None, program, report, False)
    version = _register_tuned(registry, tuned.model, onnx_version, summary, provenance)
    summary = dataclasses.replace(summary, tuned_version=version.ref)
    return program_version(registry, version.ref, format=fmt.name, native_dim=native_dim, vector_format=vfmt.name,
                           engine=engine, data=data, labels=labels, register=True, provenance=provenance,
                           rps_seconds=rps_seconds, finetune=summary)


def _register_tuned(registry: Registry, proto: Any, onnx_version: ModelVersion, summary: FineTuneSummary,
                    provenance: Lineage | None) -> ModelVersion:
    """Register tuned ONNX weights as the next version, derived from ``onnx_version``, tagged, in one write."""
    if provenance is None:
        provenance = lineage.capture(script=lineage.running_script(), derived_from=onnx_version.ref)
    else:
        provenance = Lineage(**{**provenance.as_dict(), "derived_from": onnx_version.ref})
    tags = {FINETUNED_TAG: str(summary.epochs), FORMAT_TAG: summary.format, TUNED_FROM_TAG: onnx_version.ref}
    description = (f"ONNX of {onnx_version.ref} fine-tuned for {summary.format} (quantization-aware, EMULATED "
                   f"engine): {summary.line()}")
    with registry.write():
        with registry.artifacts.stage() as staging:
            saved = flavors.save_object(proto, Path(staging.folder), "onnx")
            new = registry.add_version(onnx_version.name, staging.finish(), flavor=saved.flavor,
                                       flavor_options=saved.options, framework=saved.framework,
                                       framework_version=saved.framework_version, tags=tags,
                                       description=description, signature=_plain(onnx_version.signature_json),
                                       input_example=_plain(onnx_version.example_json), lineage=provenance,
                                       origin="object", trusted=True)
        registry.set_report(new, "finetune", dataclasses.asdict(dataclasses.replace(summary, tuned_version=new.ref)))
    return new


def _register(registry: Registry, program: Program, onnx_version: ModelVersion, tags: Mapping[str, str],
              report: FpgaReport, provenance: Lineage | None) -> ModelVersion:
    """Register the program as the next version, with its entry script, runtime and environment, in one write."""
    if provenance is None:
        provenance = lineage.capture(script=lineage.running_script(), derived_from=onnx_version.ref)
    else:
        provenance = Lineage(**{**provenance.as_dict(), "derived_from": onnx_version.ref})
    description = (f"FPGA program ({program.format.name}, native dimension {program.native_dim}, EMULATED engine) "
                   f"of {onnx_version.ref}: {report.summary()}")
    environment = Environment(f"{sys.version_info.major}.{sys.version_info.minor}", tuple(artifact.requirements()))
    with registry.write():
        with registry.artifacts.stage() as staging:
            artifact.save_program(program, Path(staging.folder) / PROGRAM_FOLDER)
            new = registry.add_version(onnx_version.name, staging.finish(), flavor="files",
                                       flavor_options={"path": PROGRAM_FOLDER, "pickles": []}, framework="mlops-fpga",
                                       tags=dict(tags), description=description,
                                       signature=_plain(onnx_version.signature_json),
                                       input_example=_plain(onnx_version.example_json),
                                       lineage=provenance, origin="object", trusted=True)
        with registry.artifacts.stage() as staging:
            artifact.write_runtime(staging.folder)
            registry.set_inference(new.name, new.version,
                                   script=artifact.entry_script(new.name, new.version, program.format.name,
                                                                PROGRAM_FOLDER),
                                   environment=environment.as_dict(), assets=staging.finish())
    return new


def _plain(stored: str | None) -> dict[str, Any] | None:
    """A version's stored JSON field as plain data (its properties are read-only views)."""
    import json

    return None if stored is None else dict(json.loads(stored))


def _runtime(registry: Registry, runtime: str) -> DeploymentTarget:
    """The runtime target, recording its deployments under this target's name."""
    if runtime == "docker":
        from mlops_magics.targets.docker import DockerTarget

        delegate: Any = DockerTarget(registry)
    else:
        delegate = LocalTarget(registry)
    delegate.name = FpgaTarget.name
    target: DeploymentTarget = delegate
    return target


class FpgaTarget:
    """Deployments of compiled programs, served by the emulator on the local or docker runtime.

    ``spec.target_options``: ``format``, ``native_dim``, ``vector_format`` (see :func:`program_version`) and
    ``runtime`` (``local``, the default, or ``docker``).
    """

    name = "fpga"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def program_spec(self, spec: DeploySpec) -> tuple[DeploySpec, str]:
        """The spec of the program version ``spec`` asks for (compiled and registered if need be), and the runtime.

        Raises:
            InvalidInputError: bad settings; ConversionError: an unsupported operator (named, with its node).
        """
        options = check_options(spec.target_options)
        if options.get("runtime", "local") == "local" and (spec.cpu is not None or spec.memory is not None):
            raise InvalidInputError("--cpu and --memory limit containers: deploy with --target fpga --runtime docker "
                                    "to apply them (a local process runs without limits).")
        found = program_version(self.registry, spec.version.ref, format=options.get("format"),
                                native_dim=options.get("native_dim"), vector_format=options.get("vector_format"))
        assert found.version is not None  # registered or found
        inference = self.registry.inference(found.version)
        return dataclasses.replace(spec, version=found.version, script=inference.script or "",
                                   script_line_offset=None, inference=inference, target_options={}), options.get(
            "runtime", "local")

    @staticmethod
    def runtime_of(deployment: Deployment) -> str:
        """The runtime a deployment runs on: docker when it has a container, else local."""
        return "docker" if deployment.config.get("container") else "local"

    def deploy(self, spec: DeploySpec) -> Deployment:
        served, runtime = self.program_spec(spec)
        return _runtime(self.registry, runtime).deploy(served)

    def replace(self, deployment: Deployment, spec: DeploySpec) -> Deployment:
        served, _ = self.program_spec(spec)
        return _runtime(self.registry, self.runtime_of(deployment)).replace(deployment, served)

    def delete(self, deployment: Deployment) -> None:
        _runtime(self.registry, self.runtime_of(deployment)).delete(deployment)

    def status(self, deployment: Deployment) -> str:
        return _runtime(self.registry, self.runtime_of(deployment)).status(deployment)

    def logs(self, deployment: Deployment, tail: int) -> str:
        return _runtime(self.registry, self.runtime_of(deployment)).logs(deployment, tail)

    def log_file(self, deployment: Deployment) -> tuple[Path, str]:
        return _runtime(self.registry, self.runtime_of(deployment)).log_file(deployment)
