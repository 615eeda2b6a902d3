"""The Jupyter server extension: a small authenticated REST API over the registry and deployments, for the
JupyterLab sidebar. Enabled on install (``jupyter_server_config.d/mlops_magics.json``).

Every route reads the registry ``?registry=FOLDER`` names (the server's default when none is named): the
server's default, a registry in use (a kernel recorded it) or an existing registry folder; any other path is
refused (400 not absolute, 404 not a registry), so that no URL creates or reads a folder that is not a registry.

    GET    {base}/mlops/api/health                          {"version", "registry"}
    GET    {base}/mlops/api/registries                      registries in use, the default, kernel id -> registry
    GET    {base}/mlops/api/models                          models, their versions and aliases
    GET    {base}/mlops/api/models/NAME/versions/VERSION    one version: fields, alias history, reports
    GET    {base}/mlops/api/deployments                     deployments, state checked now
    GET    {base}/mlops/api/deployments/NAME/logs?tail=N    the end of the server log
    DELETE {base}/mlops/api/deployments/NAME                undeploy (idempotent)

Handlers are thin: they call :mod:`mlops_magics.payloads` and write JSON; every error becomes a JSON HTTP error
in one place (:meth:`MlopsHandler.write_error`). Nothing here loads a model.
"""

from __future__ import annotations

from typing import Any

from mlops_magics.server_extension.handlers import handlers


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "mlops_magics.server_extension"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the handlers under the server's base URL."""
    web_app = serverapp.web_app
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    serverapp.log.info("mlops_magics: REST API at %smlops/api", web_app.settings["base_url"])
