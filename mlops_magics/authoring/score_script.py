"""Entry scripts: check them before any deployment, and write a default one for a model.

Every problem names the line of the notebook cell it is on (``line_offset`` is the number of
lines above the script in the cell: 1 for ``%%score_script``'s own line).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mlops_magics.errors import InvalidInputError

#: Modules the scoring server provides inside a deployment, whatever the kernel has.
SERVER_PROVIDED = {"azureml", "azureml_inference_server_http"}


@dataclass(frozen=True)
class ScriptProblem:
    """One thing wrong with an entry script, at a line of the cell (None: the whole script)."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return self.at("cell line")

    def at(self, place: str) -> str:
        """The problem, its line named as ``place`` says (``'cell line'``, ``'score.py line'``)."""
        return f"{place} {self.line}: {self.message}" if self.line is not None else self.message


@lru_cache(maxsize=1)
def _known_modules() -> list[str]:
    import importlib.metadata

    return sorted({*importlib.metadata.packages_distributions(), *sys.stdlib_module_names})


def _resolvable(module: str) -> bool:
    if module in SERVER_PROVIDED or module in sys.stdlib_module_names or module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _imports(tree: ast.Module) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
    return found


def problems(source: str, *, line_offset: int = 0) -> list[ScriptProblem]:
    """Everything that would stop the script from being served, without running it."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        line = None if exc.lineno is None else exc.lineno + line_offset
        text = f" ({exc.text.strip()})" if exc.text and exc.text.strip() else ""
        return [ScriptProblem(line, f"syntax error: {exc.msg}{text}")]
    found: list[ScriptProblem] = []
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    if "init" not in functions:
        found.append(ScriptProblem(None, "no init() function: define def init(): to load the model "
                                         "(run %score_script NAME --generate for a starting point)."))
    run = functions.get("run")
    if run is None:
        found.append(ScriptProblem(None, "no run() function: define def run(data): to score a request."))
    else:
        args = run.args
        line = run.lineno + line_offset
        if args.vararg or args.kwarg or args.posonlyargs:
            found.append(ScriptProblem(line, "run() takes *args, **kwargs or positional-only parameters; the "
                                             "server calls it with named arguments, e.g. def run(data)."))
        names = [a.arg for a in (*args.args, *args.kwonlyargs)]
        if not [n for n in names if n != "request_headers"]:
            found.append(ScriptProblem(line, "run() needs a parameter for the input, e.g. def run(data)."))
        if isinstance(run, ast.AsyncFunctionDef):
            found.append(ScriptProblem(line, "run() must be a plain function, not async def."))
    for module, lineno in _imports(tree):
        if not _resolvable(module):
            close = difflib.get_close_matches(module, _known_modules(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            found.append(ScriptProblem(lineno + line_offset, f"import {module!r} cannot be resolved in this kernel:"
                                                             f" install it, or fix the name.{hint}"))
    return found


def check(source: str, *, line_offset: int = 0, place: str = "cell line") -> None:
    """Raise if the script cannot be served.

    Args:
        place: how the lines are named: ``'cell line'`` (a cell's), ``'score.py line'`` (a file's).

    Raises:
        InvalidInputError: every problem found, one per line, with the cell line it is on.
    """
    found = problems(source, line_offset=line_offset)
    if found:
        listed = "\n".join(f"  - {p.at(place)}" for p in found)
        raise InvalidInputError(f"The entry script cannot be served:\n{listed}")


#: How every generated entry script explains rows of the wrong shape (one wording for every flavor): what came
#: (rows x columns, named or not, what is missing) and what the signature expects, said once, in the 400 answer.
SHAPE_MISMATCH = '''class BadShape(ValueError):
    """The rows do not have the columns the model expects; the message says what came and what to send."""


def _mismatch(rows, columns, expected):
    """'got 2 rows x 5 unnamed columns; expected 13 named columns: 'a', ...' (what came, what is expected)."""
    named = any(isinstance(c, str) for c in columns)
    got = (f"got {rows} row{'s' if rows != 1 else ''} x {len(columns)} {'named' if named else 'unnamed'} "
           f"column{'s' if len(columns) != 1 else ''}")
    have = set(columns) if named else set()
    missing = [c for c in expected if c not in have]
    if named and missing:
        got += f", missing {', '.join(map(repr, missing[:20]))}{' ...' if len(missing) > 20 else ''}"
    example = json.dumps({"data": [{expected[0]: "..."}]}).replace(\'"..."}\', "..., ...}")
    return BadShape(f"{got}; expected {len(expected)} named column{'s' if len(expected) != 1 else ''}: "
                    f"{', '.join(map(repr, expected))}. Send records, e.g. {example}")


'''

#: What ``run()`` answers when the input cannot be used: 400 with what is wrong (and, unless the error already
#: says what to send, the body's expected form).
_BAD_INPUT = (
    "    except (ValueError, KeyError, TypeError) as exc:\n"
    "        from azureml.contrib.services.aml_response import AMLResponse\n\n"
    "        hint = \"\" if type(exc).__name__ == \"BadShape\" else \" Send {\\\"data\\\": ROWS}.\"\n"
    "        return AMLResponse({\"message\": f\"Bad input: {exc}.{hint}\"}, 400, json_str=True)\n"
)


def default_script(name: str, version: int, flavor: str, options: Mapping[str, Any],
                   signature: Mapping[str, Any] | None) -> str:
    """A ready-to-edit entry script for a model of this flavor and signature.

    The request body is ``{"data": ...}``: rows as lists (arrays) or as records (data frames).
    Input that does not match the signature is answered with a 400 that says what is wrong.
    """
    inputs = dict((signature or {}).get("inputs") or {})
    file = options.get("file") or options.get("path") or "model.pkl"
    if flavor == "onnx":
        return _onnx_script(name, version, options.get("file") or "model.onnx")
    header = (f'"""Entry script for {name}:{version} ({flavor}), generated by mlops-magics; edit freely.\n\n'
              'Request body: {"data": ROWS}. Response: the predictions as a JSON list.\n"""\n\n')
    check_columns = ""
    if inputs.get("type") == "dataframe":
        columns = [c["name"] for c in inputs.get("columns", [])]
        check_columns = (
            f"COLUMNS = {columns!r}\n\n\n" + SHAPE_MISMATCH
            + "def _frame(rows):\n"
            "    import pandas as pd\n\n"
            "    frame = pd.DataFrame(rows)\n"
            "    if any(c not in frame.columns for c in COLUMNS):\n"
            "        raise _mismatch(len(frame), list(frame.columns), COLUMNS)\n"
            "    return frame[COLUMNS]\n\n\n"
        )
        to_input = "_frame(rows)"
    elif inputs.get("type") == "tensor" and len(inputs.get("shape", [])) == 2:
        width = inputs["shape"][1]
        check_columns = (
            f"WIDTH = {width}\n\n\n"
            "def _array(rows):\n"
            "    array = np.asarray(rows, dtype=float)\n"
            "    if array.ndim == 1:\n"
            "        array = array.reshape(1, -1)\n"
            "    if array.ndim != 2 or array.shape[1] != WIDTH:\n"
            "        raise ValueError(f\"expected rows of {WIDTH} numbers, got shape {list(array.shape)}\")\n"
            "    return array\n\n\n"
        )
        to_input = "_array(rows)"
    else:
        to_input = "rows"
    if flavor == "pytorch":
        load = (f"    model = torch.load(os.path.join(os.environ['AZUREML_MODEL_DIR'], {file!r}), weights_only=False)\n"
                "    model.eval()\n")
        imports = "import json\nimport os\n\nimport numpy as np\nimport torch\n"
        predict = ("    with torch.no_grad():\n"
                   "        return model(torch.as_tensor(np.asarray(data), dtype=torch.float32)).tolist()\n")
    elif options.get("serializer") == "skops":  # no pickle: only skops' default types and those listed
        trusted = list(options.get("untrusted_types") or [])
        load = f"    model = sio.load(os.path.join(os.environ['AZUREML_MODEL_DIR'], {file!r}), trusted=TRUSTED)\n"
        imports = ("import json\nimport os\n\nimport numpy as np\nimport skops.io as sio\n\n"
                   "# Types beyond skops' trusted defaults that this version holds (loading any other is refused).\n"
                   f"TRUSTED = {trusted!r}\n")
        predict = ("    result = model.predict(data)\n"
                   "    return result.tolist() if hasattr(result, 'tolist') else result\n")
    else:
        load = f"    model = joblib.load(os.path.join(os.environ['AZUREML_MODEL_DIR'], {file!r}))\n"
        imports = "import json\nimport os\n\nimport joblib\nimport numpy as np\n"
        predict = ("    result = model.predict(data)\n"
                   "    return result.tolist() if hasattr(result, 'tolist') else result\n")
    return (
        header + imports + "\n\n" + check_columns
        + "def init():\n    global model\n" + load + "\n\n"
        + "def run(raw_data):\n"
        + "    try:\n"
        + "        rows = json.loads(raw_data)[\"data\"]\n"
        + f"        data = {to_input}\n"
        + _BAD_INPUT
        + predict
    )


def _onnx_script(name: str, version: int, file: str) -> str:
    """The entry script of an ONNX model: onnxruntime and numpy only (no scikit-learn, no pandas).

    Rows of numbers feed a model with one input; records (``[{"column": value}, ...]``) feed one input per
    column, as skl2onnx makes them for data frames. The first output (labels or values) is returned.
    """
    return f'''"""Entry script for {name}:{version} (onnx), generated by mlops-magics; edit freely.

Request body: {{"data": ROWS}}: rows of numbers, or records {{"column": value}} when the model has one input
per column. Response: the model's first output (labels or values) as a JSON list. Needs onnxruntime and
numpy only.
"""

import json
import os

import numpy as np
import onnxruntime

TYPES = {{"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
         "tensor(int32)": np.int32, "tensor(bool)": np.bool_}}


def init():
    global session, inputs
    session = onnxruntime.InferenceSession(os.path.join(os.environ["AZUREML_MODEL_DIR"], {file!r}),
                                           providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()


{SHAPE_MISMATCH}def _column(values, kind):
    if kind == "tensor(string)":
        return np.array([str(v) for v in values], dtype=object).reshape(-1, 1)
    return np.asarray(values, dtype=TYPES.get(kind, np.float32)).reshape(-1, 1)


def _feed(rows):
    if isinstance(rows, dict):
        rows = [rows]
    names = [i.name for i in inputs]
    if rows and isinstance(rows[0], dict):
        if len(inputs) == 1:
            return {{inputs[0].name: np.asarray([list(r.values()) for r in rows],
                                               dtype=TYPES.get(inputs[0].type, np.float32))}}
        if any(n not in rows[0] for n in names):
            raise _mismatch(len(rows), list(rows[0]), names)
        return {{i.name: _column([r[i.name] for r in rows], i.type) for i in inputs}}
    if len(inputs) > 1:
        nested = bool(rows) and isinstance(rows[0], list)
        raise _mismatch(len(rows) if nested else 1, list(range(len(rows[0] if nested else rows))), names)
    array = np.asarray(rows, dtype=TYPES.get(inputs[0].type, np.float32))
    return {{inputs[0].name: array.reshape(1, -1) if array.ndim == 1 else array}}


def run(raw_data):
    try:
        feed = _feed(json.loads(raw_data)["data"])
    except (ValueError, KeyError, TypeError) as exc:
        from azureml.contrib.services.aml_response import AMLResponse

        hint = "" if isinstance(exc, BadShape) else " Send {{\\"data\\": ROWS}}."
        return AMLResponse({{"message": f"Bad input: {{exc}}.{{hint}}"}}, 400, json_str=True)
    return session.run(None, feed)[0].tolist()
'''
