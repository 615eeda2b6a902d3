"""``azureml.core.model.Model.get_model_path`` for deployed entry scripts.

Layouts, as Azure ML deploys them:

- several models: ``$AZUREML_MODEL_DIR/<name>/<version>/<file or folder>``;
- one model: ``$AZUREML_MODEL_DIR`` is the folder holding it (``.../<name>/<version>``);
- without ``AZUREML_MODEL_DIR``: ``./azureml-models/<name>/<version>/...``, then ``./<name>``.
"""

from __future__ import annotations

import os

from azureml.exceptions import ModelNotFoundException, WebserviceException


def _versions(folder: str) -> list[int]:
    return sorted(int(entry) for entry in os.listdir(folder) if entry.isdigit())


def _single_entry(folder: str) -> str:
    entries = sorted(os.listdir(folder))
    if len(entries) != 1:
        raise WebserviceException(f"Dir {folder} can contain only 1 file or folder. Found {entries}")
    return os.path.join(folder, entries[0])


class Model:
    """A registered model, as seen from inside a deployment."""

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: object = None) -> str:
        """Return the path of a deployed model's file or folder.

        Raises:
            WebserviceException: bad arguments, or a version folder holding several entries.
            ModelNotFoundException: the model (or that version) is not deployed here.
        """
        if model_name is None:
            raise WebserviceException("model_name is None")
        if version is not None and not isinstance(version, int):
            raise WebserviceException("version should be an int")
        root = os.environ.get("AZUREML_MODEL_DIR") or "azureml-models"
        by_name = os.path.join(root, model_name)
        if os.path.isdir(by_name) and _versions(by_name):
            chosen = version if version is not None else _versions(by_name)[-1]
            folder = os.path.join(by_name, str(chosen))
            if os.path.isdir(folder):
                return _single_entry(folder)
        parent, leaf = os.path.split(os.path.normpath(root))
        if os.path.basename(parent) == model_name and leaf.isdigit() and version in (None, int(leaf)):
            return _single_entry(root)
        if version is None and os.path.exists(model_name):
            return model_name
        known = []
        if os.path.isdir(root):
            known = [f"{n}/{v}" for n in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, n))
                     for v in (_versions(os.path.join(root, n)) or [])]
        wanted = model_name if version is None else f"{model_name} version {version}"
        raise ModelNotFoundException(
            f"Model {wanted} not found in {root} (deployed: {', '.join(known) or 'none'}) "
            f"or in the working directory {os.getcwd()}."
        )
