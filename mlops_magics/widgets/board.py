"""The deployment board of ``%deployments --widget``: live states, details, logs, reload, undeploy."""

from __future__ import annotations

import threading
from collections.abc import Callable
from html import escape
from typing import Any

import ipywidgets as widgets

from mlops_magics import api
from mlops_magics.registry import Deployment, Registry, cards, or_default
from mlops_magics.widgets.common import ListPanel, StatusLine, button


class DeploymentBoard(ListPanel):
    """Deployments with their live state (Refresh, or polling every ``poll`` seconds), and actions on the selected
    one: logs, reload (``%reload``), undeploy (``%undeploy``); its card links the swagger document.

    Deleted deployments are left out unless ``include_deleted`` (or the "Show deleted" box); an action that cannot
    apply to the selected one's state is disabled (reload: only a running or unhealthy one; undeploy: not a
    deleted one).
    """

    def __init__(self, *, registry: Registry | None = None, poll: float | None = None, log_lines: int = 30,
                 include_deleted: bool = False) -> None:
        self.registry = or_default(registry)
        self.show_deleted = widgets.Checkbox(value=include_deleted, description="Show deleted", indent=False,
                                             layout=widgets.Layout(width="130px"))
        self.log_lines = log_lines
        self.status = StatusLine()
        self.services = self.choices = widgets.Select(options=[], rows=8, layout=widgets.Layout(width="420px"))
        self.details = widgets.HTML()
        self.log = widgets.HTML()
        self.refresh_button = button("Refresh", "Check every deployment's state now", icon="refresh")
        self.logs_button = button("Logs", "Show the end of the server log")
        self.reload_button = button("Reload", "Serve the current entry script and environment")
        self.undeploy_button = button("Undeploy", "Stop and remove the service", style="danger")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.logs_button.on_click(lambda _: self.show_logs())
        self.reload_button.on_click(lambda _: self.reload())
        self.undeploy_button.on_click(lambda _: self.undeploy())
        self.services.observe(lambda _: self._show(), names="value")
        self.show_deleted.observe(lambda _: self.refresh(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.services, self.details]),
            widgets.HBox([self.refresh_button, self.logs_button, self.reload_button, self.undeploy_button,
                          self.show_deleted]),
            self.status.widget, self.log,
        ])
        self._deployments: dict[str, Deployment] = {}
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.refresh()
        if poll:
            self.start_polling(poll)

    def refresh(self) -> None:
        """Check every deployment's state now and list them (deleted ones last, when shown)."""
        found = self.status.run("Checking", lambda: api.list_deployments(include_deleted=self.show_deleted.value,
                                                                         registry=self.registry))
        if found is None:
            return
        ordered = sorted(found, key=lambda d: (d.state == "deleted", d.name))
        self._deployments = {d.name: d for d in ordered}
        keep = self.services.value
        self.services.options = [(f"{d.name}  {d.model_name}:{d.model_version}  {d.target}  {d.state}", d.name)
                                 for d in ordered]
        self.services.value = keep if keep in self._deployments else (ordered[0].name if ordered else None)
        self._show()
        live = sum(1 for d in ordered if d.state == "running")
        hidden = f" ({found.hidden} deleted not shown)" if found.hidden else ""
        self.status.say(f"{live} running, {len(ordered)} in all{hidden}")

    def _show(self) -> None:
        deployment = self._deployments.get(self.selected or "")
        self.details.value = cards.deployment_html(deployment) if deployment else "<em>No deployments.</em>"
        state = deployment.state if deployment else None
        self.logs_button.disabled = deployment is None
        self.reload_button.disabled = state not in ("running", "unhealthy", "updating")
        self.undeploy_button.disabled = state in (None, "deleted")

    def show_logs(self) -> None:
        """Show the last lines of the selected service's server log."""
        name = self.selected
        if name is None:
            return
        text = self.status.run(f"Reading {name}'s log", lambda: api.logs(name, tail=self.log_lines,
                                                                             registry=self.registry))
        if text is not None:
            self.log.value = f"<pre style='max-height:300px;overflow:auto'>{escape(text or '(empty log)')}</pre>"
            self.status.say(f"Last {self.log_lines} lines of {name}'s log.")

    def reload(self) -> None:
        """Serve the selected service's current entry script; the old one answers until the new one is ready."""
        self._act("Reloading", "Reloaded", api.reload)

    def undeploy(self) -> None:
        """Stop and remove the selected service."""
        self._act("Undeploying", "Undeployed", api.undeploy)

    def _act(self, doing: str, done: str, action: Callable[..., Any]) -> None:
        name = self.selected
        if name is not None and self.status.run(f"{doing} {name}",
                                                lambda: action(name, registry=self.registry)) is not None:
            self.refresh()
            self.status.say(f"{done} {name}.")

    def start_polling(self, every: float) -> None:
        """Refresh every ``every`` seconds in the background until :meth:`stop_polling`."""
        if every <= 0:
            raise ValueError(f"poll {every} is invalid: give seconds, e.g. 5.")
        self.stop_polling()
        self._stop.clear()

        def poll() -> None:
            while not self._stop.wait(every):
                self.refresh()

        self._poller = threading.Thread(target=poll, name="mlops-deployments-poll", daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        """Stop the background refresh (idempotent)."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
