"""Notebook widgets (ipywidgets core widgets only): a model browser and a deployment board.

They are adapters, like the magics: every action calls the API function the magic of the same meaning calls,
and an error shows in the widget's status line (what failed and what to do) instead of a traceback lost in
the kernel's log. ``%models --widget`` and ``%deployments --widget`` show them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from html import escape
from typing import Any, TypeVar

import ipywidgets as widgets

from mlops_magics import api, display, services, views
from mlops_magics.errors import MlopsError
from mlops_magics.registry import Deployment, ModelVersion, Registry, cards, or_default

T = TypeVar("T")
_OK, _ERROR, _BUSY = "#2e7d32", "#c62828", "#616161"


class StatusLine:
    """One line under a widget: what the last action did, or why it failed."""

    def __init__(self) -> None:
        self.widget = widgets.HTML(value="")
        self.failed = False
        self._text = ""

    @property
    def text(self) -> str:
        """The message without its markup."""
        return self._text

    def say(self, message: str, colour: str = _OK) -> None:
        self._text = message
        self.failed = colour == _ERROR
        self.widget.value = f'<span style="color:{colour}">{escape(message)}</span>'

    def run(self, what: str, action: Callable[[], T]) -> T | None:
        """Run ``action``, saying ``what`` meanwhile; an MlopsError becomes the status line (None is returned)."""
        self.say(f"{what}...", _BUSY)
        try:
            return action()
        except MlopsError as exc:
            self.say(str(exc), _ERROR)
            return None


def _button(description: str, tooltip: str, style: str = "", icon: str = "") -> widgets.Button:
    return widgets.Button(description=description, tooltip=tooltip, button_style=style, icon=icon,
                          layout=widgets.Layout(width="auto"))


class _ListPanel:
    """A panel around a list: shows itself as its widget; the list's selection is ``selected``."""

    widget: widgets.Box
    choices: widgets.Select

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def selected(self) -> str | None:
        """The selected item (a version's ``NAME:VERSION``, a service's name)."""
        value: str | None = self.choices.value
        return value

    def select(self, item: str) -> None:
        """Select an item, as a click in the list does."""
        listed = [value for _, value in self.choices.options]
        if item not in listed:
            raise ValueError(f"{item!r} is not listed; listed: {', '.join(listed) or 'none'}.")
        self.choices.value = item


class ModelBrowser(_ListPanel):
    """Browse model versions (name glob and tag filters), see one in full, and act on it.

    Actions: load into the namespace (``%load_model``), move an alias to it (``%alias``), delete it
    (``%delete_model``; a second click confirms).
    """

    def __init__(self, *, registry: Registry | None = None, namespace: MutableMapping[str, Any] | None = None,
                 name: str = "", tags: str = "") -> None:
        self.registry = or_default(registry)
        self.namespace = namespace if namespace is not None else {}
        self.status = StatusLine()
        self.name_filter = widgets.Text(value=name, description="Name", placeholder="glob, e.g. iris*")
        self.tag_filter = widgets.Text(value=tags, description="Tags", placeholder="team=cv, reviewed")
        self.latest = widgets.Checkbox(value=False, description="latest only", indent=False)
        self.refresh_button = _button("Refresh", "List the versions again", icon="refresh")
        self.versions = self.choices = widgets.Select(options=[], rows=10, layout=widgets.Layout(width="320px"))
        self.details = widgets.HTML()
        narrow = widgets.Layout(width="220px")
        self.variable = widgets.Text(description="as", placeholder="variable name", layout=narrow)
        self.load_button = _button("Load", "Load the selected version (sha256-verified) into the notebook")
        self.alias = widgets.Text(description="alias", placeholder="production", layout=narrow)
        self.alias_button = _button("Move alias here", "Point the alias at the selected version")
        self.delete_button = _button("Delete", "Delete the selected version (click twice)", style="danger")
        self._armed: str | None = None
        for control in (self.name_filter, self.tag_filter, self.latest):
            control.observe(lambda _: self.refresh(), names="value")
        self.versions.observe(lambda _: self._show(), names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.load_button.on_click(lambda _: self.load())
        self.alias_button.on_click(lambda _: self.move_alias())
        self.delete_button.on_click(lambda _: self.delete())
        actions = widgets.HBox([self.variable, self.load_button, self.alias, self.alias_button, self.delete_button])
        self.widget = widgets.VBox([
            widgets.HBox([self.name_filter, self.tag_filter, self.latest, self.refresh_button]),
            widgets.HBox([self.versions, self.details]), actions, self.status.widget,
        ])
        self.refresh()

    def refresh(self) -> None:
        """List the versions matching the filters again, keeping the selection when it is still there."""
        tags = [t.strip() for t in self.tag_filter.value.split(",") if t.strip()]
        found = self.status.run("Listing", lambda: api.list_models(self.name_filter.value.strip() or None, tags,
                                                                    latest=self.latest.value, registry=self.registry))
        if found is None:
            return
        keep = self.versions.value
        self.versions.options = [(_version_label(v), v.ref) for v in found]
        self.versions.value = keep if keep in {v.ref for v in found} else (found[0].ref if found else None)
        self._show()
        self.status.say(f"{len(found)} version{'s' if len(found) != 1 else ''}")

    def _show(self) -> None:
        self._armed = None
        ref = self.selected
        if ref is None:
            self.details.value = "<em>No model version matches.</em>"
            return
        version = self.status.run("Reading", lambda: self.registry.get(ref))
        if version is not None:
            self.details.value = version_details_html(self.registry, version)
            self.variable.value = self.variable.value or api.variable_name_for(version.name)

    def _after(self, message: str, select: str | None = None) -> None:
        self.refresh()
        if select is not None and select in {value for _, value in self.versions.options}:
            self.versions.value = select
        self.status.say(message)

    def load(self) -> Any:
        """Load the selected version into the namespace under the variable name given."""
        ref, var = self.selected, self.variable.value.strip()
        if ref is None or not var.isidentifier():
            self.status.say(f"Give a valid Python variable name to load into (not {var!r}).", _ERROR)
            return None
        model = self.status.run(f"Loading {ref}", lambda: api.load_model(ref, registry=self.registry))
        if model is not None:
            self.namespace[var] = model
            self.status.say(f"Loaded {ref} into '{var}' (sha256 verified).")
        return model

    def move_alias(self) -> None:
        """Point the alias typed in at the selected version (gated aliases refuse unvalidated versions)."""
        ref, alias = self.selected, self.alias.value.strip()
        if ref is None or not alias:
            self.status.say("Select a version and type the alias to move, e.g. production.", _ERROR)
            return
        moved = self.status.run(f"Moving {alias}", lambda: api.set_alias(ref, alias, registry=self.registry))
        if moved is not None:
            self._after(f"{alias} -> {ref}", select=ref)

    def delete(self) -> None:
        """Delete the selected version: the first click arms, the second deletes."""
        ref = self.selected
        if ref is None:
            return
        if self._armed != ref:
            self._armed = ref
            self.status.say(f"Click Delete again to delete {ref} (its artifact is removed).", _ERROR)
            return
        self._armed = None
        deleted = self.status.run(f"Deleting {ref}", lambda: api.delete_model(ref, registry=self.registry))
        if deleted is not None:
            self._after(f"Deleted {ref}.")


def _version_label(v: ModelVersion) -> str:
    aliases = f" [{', '.join(v.aliases)}]" if v.aliases else ""
    return f"{v.name}:{v.version}{aliases}"


def version_details_html(registry: Registry, version: ModelVersion) -> str:
    """One version in full: the card, its aliases' history, and its validation, profile and ONNX reports."""
    parts = [cards.model_version_html(version)]
    history = registry.alias_history(version.name, None)
    if history:
        rows = [{"at": display.when(e.at), "alias": e.alias, "version": "removed" if e.version is None else e.version,
                 "by": e.by} for e in history]
        parts.append("<p><strong>Alias history</strong></p>" + display.table(rows))
    for kind, report in registry.reports(version).items():
        summary = views.report_summary(kind, report)
        parts.append(f"<p><strong>{escape(kind)}</strong>: {escape(summary)}</p>")
    return "".join(parts)


class DeploymentBoard(_ListPanel):
    """Deployments with their live state (Refresh, or polling every ``poll`` seconds), and actions on the selected
    one: logs, reload (``%reload``), undeploy (``%undeploy``); its card links the swagger document."""

    def __init__(self, *, registry: Registry | None = None, poll: float | None = None, log_lines: int = 30) -> None:
        self.registry = or_default(registry)
        self.log_lines = log_lines
        self.status = StatusLine()
        self.services = self.choices = widgets.Select(options=[], rows=8, layout=widgets.Layout(width="420px"))
        self.details = widgets.HTML()
        self.log = widgets.HTML()
        self.refresh_button = _button("Refresh", "Check every deployment's state now", icon="refresh")
        self.logs_button = _button("Logs", "Show the end of the server log")
        self.reload_button = _button("Reload", "Serve the current entry script and environment")
        self.undeploy_button = _button("Undeploy", "Stop and remove the service", style="danger")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.logs_button.on_click(lambda _: self.show_logs())
        self.reload_button.on_click(lambda _: self.reload())
        self.undeploy_button.on_click(lambda _: self.undeploy())
        self.services.observe(lambda _: self._show(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.services, self.details]),
            widgets.HBox([self.refresh_button, self.logs_button, self.reload_button, self.undeploy_button]),
            self.status.widget, self.log,
        ])
        self._deployments: dict[str, Deployment] = {}
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.refresh()
        if poll:
            self.start_polling(poll)

    def refresh(self) -> None:
        """Check every deployment's state now and list them (deleted ones last)."""
        found = self.status.run("Checking", lambda: services.deployments(registry=self.registry))
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
        self.status.say(f"{live} running, {len(ordered)} in all")

    def _show(self) -> None:
        deployment = self._deployments.get(self.selected or "")
        self.details.value = cards.deployment_html(deployment) if deployment else "<em>No deployments.</em>"

    def show_logs(self) -> None:
        """Show the last lines of the selected service's server log."""
        name = self.selected
        if name is None:
            return
        text = self.status.run(f"Reading {name}'s log", lambda: services.logs(name, tail=self.log_lines,
                                                                             registry=self.registry))
        if text is not None:
            self.log.value = f"<pre style='max-height:300px;overflow:auto'>{escape(text or '(empty log)')}</pre>"
            self.status.say(f"Last {self.log_lines} lines of {name}'s log.")

    def reload(self) -> None:
        """Serve the selected service's current entry script; the old one answers until the new one is ready."""
        self._act("Reloading", "Reloaded", services.reload)

    def undeploy(self) -> None:
        """Stop and remove the selected service."""
        self._act("Undeploying", "Undeployed", services.undeploy)

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


__all__ = ["DeploymentBoard", "ModelBrowser", "StatusLine", "version_details_html"]
