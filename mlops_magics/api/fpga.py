"""The EMULATED FPGA engine from the notebook: the API behind %fpga compile, %fpga sweep and %deploy --target fpga.

A registered network (an ONNX version, or a model ``%onnx`` converts) is compiled for a Brainwave-style
narrow-precision matrix-vector engine (:mod:`mlops_magics.fpga`): the report says, per layer, the instructions,
tiles and MACs, the EMULATED latency (the latency model, never a measurement on an FPGA), the weight memory, the
accuracy beside fp32 on the rows given, and the emulator's own requests/s measured here. A compiled program is
registered as the next version of the model, derived from its ONNX version (see :mod:`mlops_magics.targets.fpga`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlops_magics.errors import InvalidInputError
from mlops_magics.registry import Lineage, Registry, or_default

if TYPE_CHECKING:  # the engine needs numpy: imported on first use, so that importing the API stays cheap
    from mlops_magics.fpga.latency import Engine
    from mlops_magics.fpga.report import FpgaReport, SweepReport

#: The formats ``fpga_sweep`` compares when none are given (the issue's list).
SWEEP_FORMATS = ("fp32", "mxint8", "mxfp8", "msfp9", "msfp8", "mxfp6", "mxfp4")
#: At most this many formats in one sweep.
MAX_FORMATS = 16
#: The format ``fpga_compile`` and ``%deploy --target fpga`` use when none is given.
DEFAULT_FORMAT = "mxfp8"
#: Seconds the emulator's requests/s are measured for by ``fpga_compile``.
RPS_SECONDS = 0.3


def engine_of(native_dim: int, *, clock_mhz: float | None = None, lanes: int | None = None,
              tile_engines: int | None = None, dispatch_cycles: int | None = None) -> Engine:
    """The emulated engine: Brainwave's Stratix 10 figures (:data:`~mlops_magics.fpga.latency.BRAINWAVE_S10`) with
    the settings given in their place.

    Raises:
        InvalidInputError: a setting out of range.
    """
    from mlops_magics.fpga.latency import BRAINWAVE_S10, Engine

    base = BRAINWAVE_S10
    chosen = {"clock_mhz": base.clock_mhz if clock_mhz is None else float(clock_mhz),
              "lanes": base.lanes if lanes is None else int(lanes),
              "tile_engines": base.tile_engines if tile_engines is None else int(tile_engines),
              "dispatch_cycles": base.dispatch_cycles if dispatch_cycles is None else int(dispatch_cycles)}
    if not 0 < chosen["clock_mhz"] <= 10_000:
        raise InvalidInputError(f"--clock-mhz {chosen['clock_mhz']:g} is out of range: give 0 < MHz <= 10000 "
                                f"(Brainwave's is {base.clock_mhz:g}).")
    for key, low in (("lanes", 1), ("tile_engines", 1), ("dispatch_cycles", 0)):
        if not low <= chosen[key] <= 65_536:
            raise InvalidInputError(f"--{key.replace('_', '-')} {chosen[key]} is out of range: give {low} to 65536.")
    source = base.source if chosen == {k: getattr(base, k) for k in chosen} else "settings given, else " + base.source
    return Engine(clock_mhz=chosen["clock_mhz"], native_dim=native_dim, lanes=int(chosen["lanes"]),
                  tile_engines=int(chosen["tile_engines"]), dispatch_cycles=int(chosen["dispatch_cycles"]),
                  source=source)


def fpga_compile(
    ref: str,
    *,
    format: str = DEFAULT_FORMAT,
    native_dim: int | None = None,
    vector_format: str | None = None,
    data: Any = None,
    labels: Any = None,
    clock_mhz: float | None = None,
    lanes: int | None = None,
    tile_engines: int | None = None,
    dispatch_cycles: int | None = None,
    register: bool = True,
    rps_seconds: float = RPS_SECONDS,
    finetune: int = 0,
    finetune_data: Any = None,
    finetune_labels: Any = None,
    finetune_overlap: bool = False,
    finetune_settings: Mapping[str, Any] | None = None,
    provenance: Lineage | None = None,
    registry: Registry | None = None,
) -> FpgaReport:
    """Compile a registered network for the emulated FPGA engine and report its work, latency, memory and accuracy.

    The program is registered as the next version of the model (``derived_from`` its ONNX version, tagged
    ``fpga.format``, the report stored with it) unless the same program was registered before (then that version
    is used, and its report updated when rows are given) or ``register`` is off.

    With ``finetune=EPOCHS`` the ONNX weights are first fine-tuned for the format (quantization-aware, through the
    emulator's own rounding; needs PyTorch) on ``finetune_data`` / ``finetune_labels``, the tuned ONNX model is
    registered as the next version (``derived_from`` the ONNX version, tagged ``fpga.finetuned=EPOCHS`` and
    ``fpga.format``), and that is what is compiled and registered as the program (the version after it). The
    report's ``finetune`` gives the accuracy before and after tuning, in the format and in fp32, on ``data`` when
    it has ``labels`` (the rows of the report's accuracy), else on a share of the training rows held out and never
    trained on. Training rows that are also ``data`` rows are refused unless ``finetune_overlap``.

    Examples::

        fpga_compile("digits-mlp", format="msfp9", data=X_val, labels=y_val)
        fpga_compile("digits-mlp", format="msfp8", data=X_val, labels=y_val,
                     finetune=5, finetune_data=X_train, finetune_labels=y_train)
        fpga_compile("digits-mlp", format="mxfp4", finetune=10, finetune_data=X, finetune_labels=y,
                     finetune_settings={"learning_rate": 5e-4, "holdout": 0.25}, register=False)

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``: an ONNX version, a model ``%onnx`` converts (converted
            and registered as ``%onnx`` does, parity checked), or a program version (its ONNX version is used).
        format: the number format of weights and matrix-vector inputs (``mxfp8``, ``msfp8``, ``fp32``...).
        native_dim: the engine's native vector length (default: the program's own, else 400, Brainwave's).
        vector_format: precision of point-wise work (default: fp32 for fp32, else bf16).
        data: rows to measure accuracy and agreement with fp32 on (and to time the emulator with).
        labels: the rows' true labels (accuracy; without them only the agreement with fp32).
        clock_mhz, lanes, tile_engines, dispatch_cycles: the emulated engine (default: Brainwave on Stratix 10).
        register: register the program (off: compile and report only).
        rps_seconds: seconds to measure the emulator's requests/s at batch 1 (0: not measured).
        finetune: epochs of quantization-aware fine-tuning before compiling (0: none; 1 to 1000).
        finetune_data: the training rows of fine-tuning (required with ``finetune``), apart from ``data``.
        finetune_labels: their classes (the model's own class values, or score indices).
        finetune_overlap: allow training rows that are also ``data`` rows (the report counts them).
        finetune_settings: ``learning_rate`` (1e-3), ``batch_size`` (32), ``seed`` (0), ``holdout`` (0.2: the
            share of training rows measured on when ``data`` has no labels).
        provenance: the lineage of a version registered now (the magic passes the notebook and cell).

    Returns:
        The report; ``report.registered`` names the program version, ``report.program`` is the program.

    Raises:
        NotFoundError: no such model.
        ConversionError: no ONNX version can be made, or an operator the engine does not support (the message
            names the operator and the node).
        InvalidInputError: a bad format or setting; rows that do not fit the network; labels without data;
            fine-tuning without training rows, or on rows of ``data``.
        TorchMissingError: ``finetune`` without PyTorch installed (``pip install torch``).
    """
    from mlops_magics.targets import fpga as target

    if not 0 <= finetune <= 1000:
        raise InvalidInputError(f"--finetune {finetune} is out of range: give the epochs, 1 to 1000 (0: no "
                                "fine-tuning).")
    if not finetune and (finetune_data is not None or finetune_labels is not None or finetune_settings):
        raise InvalidInputError("Training rows were given without --finetune EPOCHS: say how many epochs to "
                                "fine-tune for, e.g. --finetune 5.")
    if not 0 <= rps_seconds <= 60:
        raise InvalidInputError(f"rps_seconds {rps_seconds:g} is out of range: give 0 to 60 seconds.")
    options = target.check_options({"format": format, "native_dim": native_dim, "vector_format": vector_format})
    reg = or_default(registry)
    dim = options.get("native_dim")
    engine = engine_of(dim or target.DEFAULT_NATIVE_DIM, clock_mhz=clock_mhz, lanes=lanes, tile_engines=tile_engines,
                       dispatch_cycles=dispatch_cycles)
    if finetune:
        return target.finetuned_program(
            reg, ref, epochs=finetune, train_data=finetune_data, train_labels=finetune_labels,
            format=options["format"], native_dim=dim, vector_format=options.get("vector_format"), engine=engine,
            data=data, labels=labels, allow_overlap=finetune_overlap, settings=finetune_settings, register=register,
            provenance=provenance, rps_seconds=rps_seconds).report
    found = target.program_version(
        reg, ref, format=options["format"], native_dim=dim, vector_format=options.get("vector_format"),
        engine=engine, data=data, labels=labels, register=register, provenance=provenance, rps_seconds=rps_seconds)
    return found.report


def parse_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """Format names from ``"fp32,mxfp8,msfp8"`` or a list (None: :data:`SWEEP_FORMATS`), checked, without repeats.

    Raises:
        InvalidInputError: an unknown format (the known ones listed), none, or too many.
    """
    from mlops_magics.fpga.formats import get_format

    if formats is None:
        return SWEEP_FORMATS
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names = tuple(dict.fromkeys(get_format(str(f)).name for f in items if str(f).strip()))
    if not names:
        raise InvalidInputError(f"No formats given: name some, e.g. --formats {','.join(SWEEP_FORMATS)}.")
    if len(names) > MAX_FORMATS:
        raise InvalidInputError(f"{len(names)} formats given; a sweep compares at most {MAX_FORMATS}.")
    return names


def fpga_sweep(
    ref: str,
    *,
    formats: str | Sequence[str] | None = None,
    data: Any,
    labels: Any = None,
    native_dim: int | None = None,
    clock_mhz: float | None = None,
    lanes: int | None = None,
    tile_engines: int | None = None,
    dispatch_cycles: int | None = None,
    rps_seconds: float = 0.1,
    registry: Registry | None = None,
) -> SweepReport:
    """Compile a network in each number format and compare them: accuracy drop vs EMULATED latency and memory.

    Nothing is registered (the ONNX conversion of a model that has none is, as ``%onnx`` registers it).

    Args:
        ref: as for :func:`fpga_compile`.
        formats: the formats to compare (``"fp32,mxfp8,msfp8"`` or a list; default :data:`SWEEP_FORMATS`); fp32 is
            the reference of the drop whether listed or not.
        data: rows to measure on; labels: their true labels (without them, the drop is shown as agreement only).
        native_dim: the engine's native dimension, the same for every format (default: the program version's own
            when ``ref`` is one, else 400).
        clock_mhz, lanes, tile_engines, dispatch_cycles: as for :func:`fpga_compile`.
        rps_seconds: seconds to measure each program's emulator requests/s (0: not measured).

    Returns:
        The sweep: ``.frame`` (a row per format), ``.figure()``, shown as a table and plot.

    Raises:
        as :func:`fpga_compile`.
    """
    from mlops_magics.fpga.report import SweepReport
    from mlops_magics.targets import fpga as target

    if data is None:
        raise InvalidInputError("A sweep measures each format on rows: give data (and labels for the accuracy).")
    names = parse_formats(formats)
    reg = or_default(registry)
    if native_dim is None:  # one dimension for every format: a program version's own, else Brainwave's
        version = reg.get(ref)
        native_dim = int(version.tags[target.DIM_TAG]) if target.is_program(version) else target.DEFAULT_NATIVE_DIM
    reports = [fpga_compile(ref, format=name, native_dim=native_dim, data=data, labels=labels, clock_mhz=clock_mhz,
                            lanes=lanes, tile_engines=tile_engines, dispatch_cycles=dispatch_cycles, register=False,
                            rps_seconds=rps_seconds, registry=reg) for name in names]
    return SweepReport(reports[0].source, reports[0].native_dim, tuple(reports))


def fpga_options(target_name: str, *, format: str | None = None, native_dim: int | None = None,
                 runtime: str | None = None) -> dict[str, Any]:
    """The ``fpga`` target's settings that ``%deploy`` / ``mlops deploy`` flags give (``--format``,
    ``--native-dim``, ``--runtime``), checked.

    Raises:
        InvalidInputError: a bad value, or these flags for another target.
    """
    given = {k: v for k, v in (("format", format), ("native_dim", native_dim), ("runtime", runtime))
             if v is not None}
    if not given:
        return {}
    if target_name != "fpga":
        raise InvalidInputError("--format, --native-dim and --runtime are for --target fpga.")
    from mlops_magics.targets import fpga as target

    return target.check_options(given)
