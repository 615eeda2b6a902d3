"""The OpenAPI documents (versions 2, 3 and 3.1), built once at start-up.

``/swagger.json`` is Azure ML's document, exactly as azmlinfsrv serves it (its templates, in
:mod:`mlops_backend.azure_swagger`, with the schemas of run()'s inference_schema decorators, else a
generic object schema; ``json.dumps`` of it), so that clients that diff it or generate code from it
see no difference. A ``swagger.json`` / ``swagger2.json`` (version 2), ``swagger3.json`` or
``swagger3.1.json`` file in the app root (then in the entry script's folder) is served instead, as
azmlinfsrv serves it (parsed and written again).

``/swagger-mlops.json`` is ours: what this server really does, for code generators and contract
tests. Beyond Azure's document it has the input's ``required`` parameters (those of run() without a
default: a body without one gets 400), no ``request_headers`` property (the server fills it from the
headers), ``GET /score`` (whose query parameters are run()'s inputs, each a JSON value), the real
content types, the key auth when it is on, and our routes: ``/ready``, ``/metrics`` and itself.
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

from mlops_backend import azure_swagger
from mlops_backend.config import ServeConfig
from mlops_backend.entry import EntryScript

#: Accepted ``?version=`` values and the document each selects.
VERSION_ALIASES = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
_USER_FILES = {"2": ("swagger.json", "swagger2.json"), "3": ("swagger3.json",), "3.1": ("swagger3.1.json",)}
_GENERIC = {"type": "object", "example": {}}
_ERROR = {"type": "object", "properties": {"message": {"type": "string"}}}


class SwaggerError(Exception):
    """The requested version is unknown or unavailable for this script."""


def _schemas(script: EntryScript, version: str) -> tuple[Any, Any] | None:
    if not script.schema_decorated:
        return _GENERIC, _GENERIC
    from inference_schema.schema_util import get_input_schema, get_output_schema, get_supported_versions

    supported = {VERSION_ALIASES.get(v, v) for v in get_supported_versions(script.run)}
    if version not in supported:
        return None
    return _service_input(script, get_input_schema(script.run)), get_output_schema(script.run)


def _service_input(script: EntryScript, schema: Any) -> Any:
    """inference_schema's input schema, minus request_headers, with the parameters run() requires."""
    if not isinstance(schema, dict):
        return schema
    schema = copy.deepcopy(schema)
    for key in ("properties", "example"):
        if isinstance(schema.get(key), dict):
            schema[key].pop("request_headers", None)
    required = [name for name, default in script.parameters if default is inspect.Parameter.empty]
    if required:
        schema["required"] = required
    return schema


def _query_parameters(script: EntryScript, input_schema: Any, version: str) -> list[dict[str, Any]]:
    """GET /score's query parameters: run()'s inputs, each a JSON value (a plain string is taken as it is)."""
    if not script.schema_decorated or not isinstance(input_schema, dict):
        return []
    properties = input_schema.get("properties", {})
    required = set(input_schema.get("required", ()))
    found = []
    for name, _ in script.parameters:
        entry: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                 "description": f"run()'s {name!r} input, as JSON."}
        if version == "2":  # OpenAPI 2 has no JSON-valued query parameters: a string holding the JSON
            entry["type"] = "string"
        else:
            entry["content"] = {"application/json": {"schema": properties.get(name, {})}}
        found.append(entry)
    return found


def _operation(op_id: str, description: str, ok: dict[str, Any], version: str, **extra: Any) -> dict[str, Any]:
    ref = "#/definitions/ErrorResponse" if version == "2" else "#/components/schemas/ErrorResponse"
    error: dict[str, Any] = {"description": "The service failed to execute due to an error."}
    if version == "2":
        error["schema"] = {"$ref": ref}
    else:
        error["content"] = {"application/json": {"schema": {"$ref": ref}}}
    return {"operationId": op_id, "description": description, "responses": {"200": ok, "default": error}, **extra}


def _response(description: str, schema: dict[str, Any], media: str, version: str) -> dict[str, Any]:
    if version == "2":
        return {"description": description, "schema": schema}
    return {"description": description, "content": {media: {"schema": schema}}}


def azure_document(config: ServeConfig, script: EntryScript, version: str) -> dict[str, Any] | None:
    """Azure ML's document for ``version`` ('2', '3' or '3.1'), as azmlinfsrv builds it; None if the script's
    schema lacks that version."""
    if script.schema_decorated:
        from inference_schema.schema_util import get_input_schema, get_output_schema, get_supported_versions

        supported = {VERSION_ALIASES.get(v, v) for v in get_supported_versions(script.run)}
        if version not in supported:
            return None
        input_schema, output_schema = get_input_schema(script.run), get_output_schema(script.run)
    else:
        input_schema = output_schema = {"type": "object", "example": {}}
    prefix = config.service_path_prefix
    text = (azure_swagger.SWAGGER2 if version == "2" else azure_swagger.SWAGGER3)
    text = (text.replace("$SERVICE_NAME$", _json_text(config.service_name))
            .replace("$SERVICE_VERSION$", _json_text(config.service_version))
            .replace("$PATH_PREFIX$", _json_text(f"/{prefix.strip('/')}" if prefix else "")))
    doc: dict[str, Any] = json.loads(text)
    schemas = doc["definitions"] if version == "2" else doc["components"]["schemas"]
    schemas["ServiceInput"], schemas["ServiceOutput"] = input_schema, output_schema
    if version == "3.1":
        doc["openapi"] = "3.1.0"
    return doc


def _json_text(value: str) -> str:
    """``value`` as it goes inside a JSON string (azmlinfsrv puts it there unescaped: the same for plain names)."""
    return json.dumps(value)[1:-1]


def build(config: ServeConfig, script: EntryScript, version: str) -> dict[str, Any] | None:
    """Our document (``/swagger-mlops.json``) for ``version`` ('2', '3' or '3.1'), or None if the script's schema
    lacks it."""
    schemas = _schemas(script, version)
    if schemas is None:
        return None
    input_schema, output_schema = schemas
    prefix = f"/{config.service_path_prefix.strip('/')}" if config.service_path_prefix.strip("/") else ""
    ref = "#/definitions/" if version == "2" else "#/components/schemas/"
    text = {"type": "string"}
    score_ok = _response("The prediction output of the model.", {"$ref": ref + "ServiceOutput"},
                         "application/json", version)
    security: list[dict[str, list[str]]] = [{"Bearer": []}] if config.auth_keys else []
    score = _operation("RunMLService", "Run the model and return its prediction.", score_ok, version,
                       security=security)
    score_get = _operation("RunMLServiceGet", "Run the model on the query's parameters and return its prediction.",
                           score_ok, version, security=security, parameters=_query_parameters(script, input_schema,
                                                                                                version))
    if version == "2":
        score_get["produces"] = ["application/json"]
    if version == "2":
        score["parameters"] = [{"name": "serviceInputPayload", "in": "body", "required": True,
                                "schema": {"$ref": ref + "ServiceInput"}}]
        score["consumes"] = ["application/json"]
        score["produces"] = ["application/json"]
    else:
        score["requestBody"] = {"required": True,
                                "content": {"application/json": {"schema": {"$ref": ref + "ServiceInput"}}}}
    paths = {
        f"{prefix}/": {"get": _operation("ServiceHealthCheck", "Liveness: 'Healthy' while the service is up.",
                                         _response("The service is up.", {**text, "example": "Healthy"},
                                                   "text/html", version), version)},
        f"{prefix}/score": {"post": score, "get": score_get},
        f"{prefix}/swagger.json": {"get": _operation("GetSwaggerSpec", "Azure ML's OpenAPI document of the service, "
                                                     "as Azure ML's inference server serves it.",
                                                     _response("The OpenAPI document.", {"type": "object"},
                                                               "application/json", version), version)},
        f"{prefix}/swagger-mlops.json": {"get": _operation("GetMlopsSwaggerSpec", "This document: what this server "
                                                           "does, Azure ML's routes and ours.",
                                                           _response("The OpenAPI document.", {"type": "object"},
                                                                     "application/json", version), version)},
        f"{prefix}/ready": {"get": _operation("ServiceReadiness", "Readiness: 200 once init() has run, "
                                              "503 while shutting down.",
                                              _response("Ready.", {"type": "object"}, "application/json", version),
                                              version)},
        f"{prefix}/metrics": {"get": _operation("Metrics", "Prometheus metrics.",
                                                _response("Metrics, text format.", text, "text/plain", version),
                                                version)},
    }
    info = {"title": config.service_name, "version": config.service_version,
            "description": f"API of the machine learning service {config.service_name}."}
    definitions = {"ServiceInput": input_schema, "ServiceOutput": output_schema, "ErrorResponse": _ERROR}
    bearer = {"type": "apiKey", "name": "Authorization", "in": "header", "description": "Bearer KEY"}
    if version == "2":
        return {"swagger": "2.0", "info": info, "schemes": ["http"], "paths": paths, "definitions": definitions,
                "securityDefinitions": {"Bearer": bearer}}
    return {"openapi": "3.1.0" if version == "3.1" else "3.0.3", "info": info, "paths": paths,
            "components": {"schemas": definitions, "securitySchemes": {"Bearer": bearer}}}


class Swagger:
    """Every document, serialised once: Azure ML's (``/swagger.json``) and ours (``/swagger-mlops.json``).

    Raises:
        SwaggerError: a swagger file of the app is not valid JSON (the server does not start, as azmlinfsrv).
    """

    def __init__(self, config: ServeConfig, script: EntryScript) -> None:
        self.documents: dict[str, bytes] = {}
        self.own: dict[str, bytes] = {}
        folders = list(dict.fromkeys([Path(config.app_root), config.entry_script.parent]))
        for version, files in _USER_FILES.items():
            found = next((folder / name for folder in folders for name in files if (folder / name).is_file()), None)
            doc = _read(found) if found is not None else None
            if not doc:  # azmlinfsrv generates the document when the file is missing or empty
                doc = azure_document(config, script, version)
            if doc is not None:
                self.documents[version] = json.dumps(doc).encode()
            own = build(config, script, version)
            if own is not None:
                self.own[version] = json.dumps(own).encode()

    def get(self, requested: str | None, *, own: bool = False) -> bytes:
        """The document for ``?version=`` (default 2): Azure ML's, or ours with ``own``.

        Raises:
            SwaggerError: unknown version, or none available for it; the message lists what is.
        """
        documents = self.own if own else self.documents
        available = ", ".join(sorted(documents))
        version = VERSION_ALIASES.get(requested or "2")
        if version is None:
            raise SwaggerError(f"Swagger version [{requested}] is not valid. Supported versions: [{available}].")
        if version not in documents:
            raise SwaggerError(f"Swagger version [{requested}] is not supported for the scoring script. "
                               f"Supported swagger versions: [{available}].")
        return documents[version]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SwaggerError(f"The swagger file {path} cannot be served: {exc}. Fix it (valid JSON) or remove it "
                           "to have the document generated from run()'s schema.") from None
