"""What the widgets share: a status line that shows what failed and what to do, buttons, a list panel."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any, TypeVar

import ipywidgets as widgets

from mlops_magics.errors import MlopsError

T = TypeVar("T")
#: Status colours: done, failed (what to do follows), working.
OK, ERROR, BUSY = "#2e7d32", "#c62828", "#616161"


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

    def say(self, message: str, colour: str = OK) -> None:
        self._text = message
        self.failed = colour == ERROR
        self.widget.value = f'<span style="color:{colour}">{escape(message)}</span>'

    def run(self, what: str, action: Callable[[], T]) -> T | None:
        """Run ``action``, saying ``what`` meanwhile; an MlopsError becomes the status line (None is returned)."""
        self.say(f"{what}...", BUSY)
        try:
            return action()
        except MlopsError as exc:
            self.say(str(exc), ERROR)
            return None


def button(description: str, tooltip: str, style: str = "", icon: str = "") -> widgets.Button:
    return widgets.Button(description=description, tooltip=tooltip, button_style=style, icon=icon,
                          layout=widgets.Layout(width="auto"))


class ListPanel:
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


