"""Notebook widgets (ipywidgets core widgets only): a model browser and a deployment board.

They are adapters, like the magics: every action calls the API function the magic of the same meaning calls,
and an error shows in the widget's status line (what failed and what to do) instead of a traceback lost in
the kernel's log. ``%models --widget`` and ``%deployments --widget`` show them.
"""

from __future__ import annotations

from mlops_magics.widgets.board import DeploymentBoard
from mlops_magics.widgets.browser import ModelBrowser, version_details_html
from mlops_magics.widgets.common import StatusLine

__all__ = ["DeploymentBoard", "ModelBrowser", "StatusLine", "version_details_html"]
