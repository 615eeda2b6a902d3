"""A compiled program as files, and what a deployment of it serves with: the entry script and the emulator's code.

A program is written as two files in a folder: ``program.json`` (the format, the engine's native dimension, every
layer's instructions, shapes, work and attributes) and ``weights.npz`` (the weights as rounded at compile time, the
biases and constants in the vector format, the classes of a classifier), read back with ``allow_pickle=False``:
loading a program runs no code from it. The registry hashes both files, as it hashes every artifact, and checks
them before a deployment links them.

A deployment runs the emulator in the scoring server's process. The server (``mlops_backend``) never imports
``mlops_magics``, and a container has no ``mlops_magics`` installed, so the deployment carries the emulator's own
code beside its entry script (:func:`write_runtime`): a copy of ``mlops_magics/errors.py`` and of the four modules
of ``mlops_magics/fpga`` the emulator needs (formats, compiler, emulator and this one), under a package
``mlops_magics`` that holds only them. It needs numpy and ml_dtypes (:func:`requirements`); onnx is not needed to
serve.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga.compiler import Instruction, Layer, Program, Source
from mlops_magics.fpga.formats import NumberFormat

SCHEMA = "mlops-fpga-program/1"
PROGRAM_FILE = "program.json"
WEIGHTS_FILE = "weights.npz"
#: The files of mlops_magics a deployment's runtime copies (relative to the package's folder).
RUNTIME_MODULES = ("errors.py", "fpga/__init__.py", "fpga/formats.py", "fpga/compiler.py", "fpga/emulator.py",
                   "fpga/artifact.py")
_RUNTIME_INIT = '''"""The FPGA emulator's runtime: a copy of the few modules of mlops-magics a deployed program needs
(errors, fpga.formats, fpga.compiler, fpga.emulator, fpga.artifact), written beside the entry script by the fpga
target. It is not the whole mlops-magics package."""
'''
_TUPLES = ("kernel", "strides", "pads")


def _format_dict(fmt: NumberFormat) -> dict[str, Any]:
    return {"name": fmt.name, "family": fmt.family, "element": fmt.element, "element_bits": fmt.element_bits,
            "block_size": fmt.block_size, "scale_bits": fmt.scale_bits, "emax_elem": fmt.emax_elem,
            "max_elem": fmt.max_elem, "description": fmt.description}


def _encode(value: Any, arrays: dict[str, np.ndarray], key: str) -> Any:
    """An attribute as JSON: arrays go to the npz (``{"array": key}``), a :class:`Source` to ``{"source": ...}``."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    if isinstance(value, Source):
        return {"source": {"name": value.name, "layout": value.layout, "shape": list(value.shape),
                           "scale": value.scale}}
    return list(value) if isinstance(value, tuple) else value


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict) and set(value) == {"array"}:
        return arrays[value["array"]]
    if isinstance(value, dict) and set(value) == {"source"}:
        source = value["source"]
        return Source(str(source["name"]), str(source["layout"]), tuple(int(n) for n in source["shape"]),
                      float(source["scale"]))
    return value


def _instructions(items: tuple[Instruction, ...]) -> list[list[Any]]:
    return [[i.op, list(i.operands), i.repeat] for i in items]


def save_program(program: Program, folder: Path | str) -> list[str]:
    """Write ``program`` into ``folder`` (made if missing) as ``program.json`` and ``weights.npz``.

    Returns:
        The names of the files written.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for index, layer in enumerate(program.layers):
        attrs: dict[str, Any] = {}
        for key, value in layer.attrs.items():
            if key == "steps":
                steps = []
                for j, (op, arg) in enumerate(value):
                    if isinstance(arg, np.ndarray):
                        arrays[f"{index}.step{j}"] = arg
                        steps.append([op, {"array": f"{index}.step{j}"}])
                    else:
                        steps.append([op, arg])
                attrs[key] = steps
            else:  # a Source says where tuned weights go back in the ONNX graph
                attrs[key] = _encode(value, arrays, f"{index}.{key}")
        if layer.weights is not None:
            arrays[f"{index}.weights"] = layer.weights
        if layer.bias is not None:
            arrays[f"{index}.bias"] = layer.bias
        layers.append({"name": layer.name, "kind": layer.kind, "ops": list(layer.ops),
                       "input_shape": list(layer.input_shape), "output_shape": list(layer.output_shape),
                       "instructions": _instructions(layer.instructions),
                       "load_instructions": _instructions(layer.load_instructions), "macs": layer.macs,
                       "tiles": layer.tiles, "weight_bits": layer.weight_bits, "attrs": attrs,
                       "inputs": list(layer.inputs), "output": layer.output, "time_steps": layer.time_steps,
                       "weights": layer.weights is not None, "bias": layer.bias is not None})
    if program.classes is not None:
        classes = np.asarray(program.classes)
        arrays["classes"] = classes.astype(str) if classes.dtype == object else classes
    body = {"schema": SCHEMA, "format": _format_dict(program.format),
            "vector_format": _format_dict(program.vector_format), "native_dim": program.native_dim,
            "input_name": program.input_name, "input_shape": list(program.input_shape),
            "outputs": {name: list(source) for name, source in program.outputs.items()},
            "classes": program.classes is not None, "output_axes": program.output_axes, "layers": layers}
    (out / PROGRAM_FILE).write_text(json.dumps(body, indent=1))
    savez: Any = np.savez  # numpy's stub types the keyword arrays as its allow_pickle flag
    savez(out / WEIGHTS_FILE, **arrays)
    return [PROGRAM_FILE, WEIGHTS_FILE]


def _instruction_list(items: list[list[Any]]) -> tuple[Instruction, ...]:
    return tuple(Instruction(str(op), tuple(str(o) for o in operands), int(repeat)) for op, operands, repeat in items)


def load_program(folder: Path | str) -> Program:
    """Read a program written by :func:`save_program` (no pickle is read).

    Raises:
        InvalidInputError: the folder does not hold a program of this schema (the message says what is missing).
    """
    where = Path(folder)
    try:
        body = json.loads((where / PROGRAM_FILE).read_text())
        stored = np.load(where / WEIGHTS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{where} does not hold a compiled FPGA program ({PROGRAM_FILE} and {WEIGHTS_FILE}):"
                                f" {exc}. Compile one with %fpga compile.") from exc
    if body.get("schema") != SCHEMA:
        raise InvalidInputError(f"{where / PROGRAM_FILE} is of schema {body.get('schema')!r}; this emulator reads "
                                f"{SCHEMA!r}. Compile the program again with this version of mlops-magics.")
    with stored:
        arrays = {key: stored[key] for key in stored.files}
    layers = []
    for index, item in enumerate(body["layers"]):
        attrs: dict[str, Any] = {}
        for key, value in item["attrs"].items():
            if key == "steps":
                attrs[key] = [(op, arrays[arg["array"]] if isinstance(arg, dict) else arg) for op, arg in value]
            else:
                attrs[key] = tuple(value) if key in _TUPLES else _decode(value, arrays)
        layers.append(Layer(item["name"], item["kind"], tuple(item["ops"]), tuple(item["input_shape"]),
                            tuple(item["output_shape"]), _instruction_list(item["instructions"]),
                            _instruction_list(item["load_instructions"]), int(item["macs"]), int(item["tiles"]),
                            int(item["weight_bits"]), arrays[f"{index}.weights"] if item["weights"] else None,
                            arrays[f"{index}.bias"] if item["bias"] else None, attrs, tuple(item["inputs"]),
                            item["output"], int(item.get("time_steps", 1))))
    return Program(tuple(layers), NumberFormat(**body["format"]), NumberFormat(**body["vector_format"]),
                   int(body["native_dim"]), body["input_name"], tuple(body["input_shape"]),
                   {name: (kind, tensor) for name, (kind, tensor) in body["outputs"].items()},
                   arrays["classes"] if body["classes"] else None,
                   {name: int(axis) for name, axis in body.get("output_axes", {}).items()})


def write_runtime(folder: Path | str) -> Path:
    """Copy the emulator's code into ``folder``/mlops_magics (see the module's docstring); return that folder."""
    package = Path(__file__).resolve().parent.parent
    target = Path(folder) / "mlops_magics"
    for module in RUNTIME_MODULES:
        destination = target / module
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / module, destination)
    (target / "__init__.py").write_text(_RUNTIME_INIT)
    return target


def requirements() -> list[str]:
    """What the runtime imports, pinned to the versions of this kernel: numpy and ml_dtypes."""
    pins = []
    for name in ("numpy", "ml_dtypes"):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def entry_script(name: str, version: int, format: str, folder: str = "program") -> str:
    """The entry script of a deployed program: ``init()`` loads it into the emulator, ``run()`` answers as the ONNX
    entry script does (the program's first output: labels or values, as a JSON list)."""
    return f'''"""Entry script for {name}:{version}, a program for the EMULATED FPGA engine ({format}), generated by
mlops-magics.

init() reads the compiled program (weights already rounded to {format}) and loads it into the emulator, which runs
it in numpy, rounding where the engine would. No FPGA is involved: the answers are what the engine would give, the
time is the emulator's. Request body: {{"data": ROWS}}; response: the program's first output (labels or values) as a
JSON list, as the ONNX model's entry script answers.
"""

import json
import os

import numpy as np

from mlops_magics.fpga.artifact import load_program
from mlops_magics.fpga.emulator import Emulator


def init():
    global emulator
    emulator = Emulator(load_program(os.path.join(os.environ["AZUREML_MODEL_DIR"], {folder!r})))


def run(raw_data):
    try:
        rows = json.loads(raw_data)["data"]
        outputs = emulator.run(np.asarray(rows, dtype=np.float32))
    except (ValueError, KeyError, TypeError) as exc:
        from azureml.contrib.services.aml_response import AMLResponse

        return AMLResponse({{"message": f"Bad input: {{exc}}. Send {{{{\\"data\\": ROWS}}}}."}}, 400, json_str=True)
    return next(iter(outputs.values())).tolist()
'''
