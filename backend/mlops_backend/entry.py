"""Load an Azure ML style entry script and work out how ``run()`` wants its input.

Three ways, as Azure ML's server decides them:

- ``@rawhttp``: ``run(request)`` gets the whole request (an ``AMLRequest``).
- ``@input_schema`` (inference_schema): the JSON body's keys are ``run``'s parameters.
- undecorated: ``run(data)`` gets the body as a string (GET: the query as a JSON object string).

A ``request_headers`` parameter, in any mode, receives the request headers as a dict.

An input the ``@input_schema`` decorators cannot convert to their type (``{"scale": {}}`` for a
float) is the client's error, found by :func:`input_conversion_failure`: a 400 naming the
parameter and the type (Azure ML's server answers 500, as if the script had failed).
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType, TracebackType
from typing import Any

#: Where the ``azureml`` compatibility modules live; on ``sys.path`` only inside a server process.
COMPAT_PATH = Path(__file__).resolve().parent / "_compat"
#: The module name the entry script is imported under (Azure ML uses the same).
MODULE_NAME = "entry_module"


class EntryScriptError(Exception):
    """The entry script cannot be served; the message says why."""


class InputMode(enum.Enum):
    """How ``run()`` receives a request."""

    STRING = "string"
    SCHEMA = "schema"
    RAW = "raw"


@dataclass(frozen=True)
class EntryScript:
    """A loaded entry script, ready to be initialised and called."""

    path: Path
    module: ModuleType
    init: Callable[[], Any]
    run: Callable[..., Any]
    mode: InputMode
    #: Parameter names (and defaults; ``inspect.Parameter.empty`` when required) for SCHEMA mode.
    parameters: tuple[tuple[str, Any], ...]
    #: The parameter that receives the input in STRING and RAW modes.
    input_name: str
    wants_headers: bool
    #: The code of the function under run()'s decorators: an error raised outside it came from them.
    user_code: CodeType | None = None

    @property
    def schema_decorated(self) -> bool:
        """True when ``run`` carries inference_schema decorators."""
        return self.mode is InputMode.SCHEMA


def install_compat() -> None:
    """Make ``azureml.*`` compatibility imports resolvable, after anything really installed."""
    path = str(COMPAT_PATH)
    if path not in sys.path:
        sys.path.append(path)


def _rawhttp_requested(run: Callable[..., Any]) -> bool:
    func: Any = run
    while func is not None:
        if getattr(func, "__aml_rawhttp__", False):
            return True
        func = getattr(func, "__wrapped__", None)
    for name in ("azureml.contrib.services.aml_request", "azureml_inference_server_http.api.aml_request"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "_rawHttpRequested", False):
            return True
    return False


def _schema_decorated(run: Callable[..., Any]) -> bool:
    if "inference_schema" not in sys.modules:  # a script that never imported it cannot use it
        return False
    from inference_schema.schema_util import is_schema_decorated

    return bool(is_schema_decorated(run))


def load(path: Path, app_root: Path | None = None, source_dir: Path | None = None) -> EntryScript:
    """Import the entry script and analyse ``run``; the working directory is left as it is, as azmlinfsrv does.

    The script's folder goes first on ``sys.path`` (its sibling modules import); ``app_root`` and
    ``app_root / source_dir`` are appended, as azmlinfsrv appends ``AML_APP_ROOT`` and
    ``AZUREML_SOURCE_DIRECTORY``. Relative paths in the script resolve against the directory the server
    was started in (in Azure's images and in our targets: the app root holding the source directory).

    Raises:
        EntryScriptError: the import failed (chained), or init()/run() is missing or has a signature
            the server cannot call.
    """
    install_compat()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    for extra in ([] if app_root is None else [app_root, *([app_root / source_dir] if source_dir else [])]):
        if str(extra) not in sys.path:
            sys.path.append(str(extra))
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise EntryScriptError(f"{path} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        raise EntryScriptError(f"Importing the entry script {path} failed: {type(exc).__name__}: {exc}") from exc
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise EntryScriptError(f"The entry script {path} does not define a {name}() function.")
    run = module.run
    driver = getattr(module, "driver_module", None)  # Azure SDK generated driver scripts forward to this one
    if isinstance(driver, ModuleType) and callable(getattr(driver, "run", None)):
        run = driver.run
    return _analyse(path, module, module.init, run)


def _analyse(path: Path, module: ModuleType, init: Callable[[], Any], run: Callable[..., Any]) -> EntryScript:
    params = list(inspect.signature(run).parameters.values())
    allowed = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    bad = [p.name for p in params if p.kind not in allowed]
    if bad:
        raise EntryScriptError(
            f"run() in {path} takes {', '.join(bad)} as positional-only, *args or **kwargs; the server calls "
            "run with named arguments: declare them as plain parameters, e.g. def run(data)."
        )
    wants_headers = any(p.name == "request_headers" for p in params)
    inputs = [p for p in params if p.name != "request_headers"]
    if not inputs:
        raise EntryScriptError(
            f"run() in {path} needs a parameter for the input data, e.g. def run(data)"
            + (" (request_headers alone is not enough)." if wants_headers else ".")
        )
    raw = _rawhttp_requested(run)
    schema = _schema_decorated(run)
    if raw and schema:
        raise EntryScriptError(f"run() in {path} cannot be decorated with both @rawhttp and @input_schema.")
    mode = InputMode.RAW if raw else InputMode.SCHEMA if schema else InputMode.STRING
    return EntryScript(
        path=path,
        module=module,
        init=init,
        run=run,
        mode=mode,
        parameters=tuple((p.name, p.default) for p in inputs),
        input_name=inputs[0].name,
        wants_headers=wants_headers,
        user_code=getattr(inspect.unwrap(run), "__code__", None),
    )


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def _frames(tb: TracebackType | None) -> list[Any]:
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _expected(param_type: Any) -> str:
    """What an inference_schema parameter type accepts, in words, from its swagger (plus a numpy shape)."""
    try:
        schema = param_type.input_to_swagger()
    except Exception:  # noqa: BLE001 - a description is a courtesy; the error stands without it
        return type(param_type).__name__

    nouns = {"number": "number", "integer": "integer", "string": "string", "boolean": "boolean", "object": "object"}

    def plural(node: Any) -> str:
        kind = node.get("type") if isinstance(node, dict) else None
        if kind == "array":
            return f"arrays of {plural(node.get('items', {}))}"
        return f"{nouns.get(str(kind), 'value')}s"

    def words(node: Any) -> str:
        kind = node.get("type") if isinstance(node, dict) else None
        if kind == "array":
            return f"an array of {plural(node.get('items', {}))}"
        noun = nouns.get(str(kind), f"value of type {kind}")
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"

    described = words(schema)
    sample = getattr(param_type, "sample_input", None)
    shape = getattr(sample, "shape", None)
    dtype = getattr(sample, "dtype", None)
    if shape is not None and dtype is not None and getattr(param_type, "enforce_shape", False):
        described += f" of shape ({', '.join(['n', *[str(d) for d in shape[1:]]])}), dtype {dtype}"
    return described


def input_conversion_failure(script: EntryScript, error: BaseException, kwargs: dict[str, Any]) -> str | None:
    """The message for a client whose input the schema decorators could not convert, else None.

    An error raised before the function under the decorators was entered came from the decorators'
    conversion of the input: the client sent a value of the wrong type or shape. One raised inside
    that function is the script's own failure (None: a 500, as before).
    """
    if script.user_code is None or isinstance(error, (KeyboardInterrupt, SystemExit)):
        return None
    frames = _frames(error.__traceback__)
    if any(frame.f_code is script.user_code for frame in frames):
        return None
    if not any(frame.f_globals.get("__name__", "").startswith("inference_schema") for frame in frames):
        return None  # raised before the decorators, by something else: not an input conversion
    name = param_type = None
    for frame in frames:  # the innermost decorator that was converting: its parameter failed
        local = frame.f_locals
        if "param_name" in local and "param_type" in local and frame.f_code.co_name == "decorator_input":
            name, param_type = local["param_name"], local["param_type"]
    detail = f"{type(error).__name__}: {error}"
    if name is None:
        return f"An input of run() could not be converted to the type its schema declares: {detail}"
    given = _JSON_TYPES.get(type(kwargs.get(name)), type(kwargs.get(name)).__name__)
    return (f"Invalid value for the {name!r} parameter: expected {_expected(param_type)}, got {given}. "
            f"({detail})")
