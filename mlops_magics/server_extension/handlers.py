"""Tornado handlers of the REST API (adapters: parse, call one function of :mod:`mlops_magics.payloads`, write)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from mlops_magics import payloads
from mlops_magics.errors import ConflictError, InvalidInputError, MlopsError, NotFoundError
from mlops_magics.registry import Registry
from mlops_magics.version import __version__

#: HTTP status of each error of ours; any other MlopsError is a 500.
STATUS = {NotFoundError: 404, InvalidInputError: 400, ConflictError: 409}


class MlopsHandler(APIHandler):
    """Base: runs a view, and turns our errors into JSON HTTP errors ``{"message", "reason"}``."""

    def answer(self, view: Callable[[Registry], Any], *, encoded: bool = False) -> None:
        """Write what ``view`` returns for the request's registry as JSON (``encoded``: it is JSON text already).

        The registry is the one ``?registry=FOLDER`` names (checked: the server's default, one in use or an
        existing registry; else 400/404 saying why), or the server's default. A GET answers 304 when the
        client's If-None-Match holds the body's ETag (tornado computes it).
        """
        try:
            result = view(payloads.registry_for(self.get_argument("registry", "")))
        except MlopsError as exc:
            status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
            raise tornado.web.HTTPError(status, reason=type(exc).__name__, log_message=str(exc)) from exc
        self.finish(result if encoded else json.dumps(result, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = (exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message
                   else self._reason)
        self.finish(json.dumps({"message": message, "reason": self._reason}))


class HealthHandler(MlopsHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.answer(lambda reg: {"version": __version__, "registry": str(reg.home)})


class RegistriesHandler(MlopsHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.answer(lambda reg: payloads.registries_json())


class ModelsHandler(MlopsHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.answer(lambda reg: payloads.models_json_text(registry=reg), encoded=True)


class VersionHandler(MlopsHandler):
    @tornado.web.authenticated
    def get(self, name: str, version: str) -> None:
        self.answer(lambda reg: payloads.version_detail_json(f"{name}:{version}", registry=reg))


class DeploymentsHandler(MlopsHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.answer(lambda reg: payloads.deployments_json(registry=reg))


class DeploymentHandler(MlopsHandler):
    @tornado.web.authenticated
    def delete(self, name: str) -> None:
        self.answer(lambda reg: payloads.undeploy_json(name, registry=reg))


class LogsHandler(MlopsHandler):
    @tornado.web.authenticated
    def get(self, name: str) -> None:
        raw = self.get_argument("tail", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
            raise tornado.web.HTTPError(400, reason="InvalidInputError",
                                        log_message=f"tail={raw!r} is invalid: give a number of lines, 1-10000.")
        self.answer(lambda reg: payloads.logs_json(name, int(raw), registry=reg))


def handlers(base_url: str) -> list[tuple[str, type[MlopsHandler]]]:
    """The routes under ``base_url``."""
    def route(path: str) -> str:
        return str(url_path_join(base_url, "mlops", "api", path))

    name = r"([A-Za-z0-9][A-Za-z0-9._-]*)"
    return [
        (route("health"), HealthHandler),
        (route("registries"), RegistriesHandler),
        (route("models"), ModelsHandler),
        (route(rf"models/{name}/versions/(\d+)"), VersionHandler),
        (route("deployments"), DeploymentsHandler),
        (route(rf"deployments/{name}/logs"), LogsHandler),
        (route(rf"deployments/{name}"), DeploymentHandler),
    ]
