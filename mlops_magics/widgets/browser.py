"""The model browser of ``%models --widget``: filters, a version's details and its actions."""

from __future__ import annotations

from collections.abc import MutableMapping
from html import escape
from typing import Any

import ipywidgets as widgets

from mlops_magics import api, display, payloads
from mlops_magics.registry import ModelVersion, Registry, cards, or_default
from mlops_magics.widgets.common import ERROR, ListPanel, StatusLine, button


class ModelBrowser(ListPanel):
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
        self.refresh_button = button("Refresh", "List the versions again", icon="refresh")
        self.versions = self.choices = widgets.Select(options=[], rows=10, layout=widgets.Layout(width="320px"))
        self.details = widgets.HTML()
        narrow = widgets.Layout(width="220px")
        self.variable = widgets.Text(description="as", placeholder="variable name", layout=narrow)
        self.load_button = button("Load", "Load the selected version (sha256-verified) into the notebook")
        self.alias = widgets.Text(description="alias", placeholder="production", layout=narrow)
        self.alias_button = button("Move alias here", "Point the alias at the selected version")
        self.delete_button = button("Delete", "Delete the selected version (click twice)", style="danger")
        self._armed: str | None = None
        for control in (self.name_filter, self.tag_filter, self.latest):
            control.observe(lambda _: self.refresh(), names="value")
        self.versions.observe(lambda _: self._show(), names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.load_button.on_click(lambda _: self.load())
        self.alias_button.on_click(lambda _: self.move_alias())
        self.delete_button.on_click(lambda _: self.delete())
        wrap = widgets.Layout(flex_flow="row wrap")  # a narrow notebook wraps the row instead of cutting off its end
        actions = widgets.HBox([self.variable, self.load_button, self.alias, self.alias_button, self.delete_button],
                               layout=wrap)
        self.widget = widgets.VBox([
            widgets.HBox([self.name_filter, self.tag_filter, self.latest, self.refresh_button], layout=wrap),
            widgets.HBox([self.versions, self.details], layout=wrap), actions, self.status.widget,
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
            self.status.say(f"Give a valid Python variable name to load into (not {var!r}).", ERROR)
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
            self.status.say("Select a version and type the alias to move, e.g. production.", ERROR)
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
            self.status.say(f"Click Delete again to delete {ref} (its artifact is removed).", ERROR)
            return
        self._armed = None
        deleted = self.status.run(f"Deleting {ref}", lambda: api.delete_model(ref, registry=self.registry))
        if deleted is not None:
            self._after(str(deleted))


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
        summary = payloads.report_summary(kind, report)
        parts.append(f"<p><strong>{escape(kind)}</strong>: {escape(summary)}</p>")
    return "".join(parts)


