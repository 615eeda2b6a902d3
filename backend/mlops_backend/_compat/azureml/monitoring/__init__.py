"""``azureml.monitoring.ModelDataCollector`` for entry scripts: CSV files in Azure's folder layout.

Collection is on when the deployment collects data (``--collect``; the server's ``--collect-dir``), as Azure's
was when the web service had ``collect_model_data=True``. The CSV files go under the collection folder::

    modeldata/<subscription>/<group>/<workspace>/<service>/<model>/<version>/<designation>/<yyyy>/<mm>/<dd>/data.csv

(Azure's layout: ``workspace`` is ``"<subscription>/<resource group>/<workspace>"``, ``default/default/default``
when the script passes none; the service, model and version come from the deployment). They are written by the
server's background writer, never on the request path: a ``collect()`` call's rows go in whole
or not at all (a full disk leaves no partial row; they wait in memory, bounded, and are written when space
returns; the worker's ``csv_*`` counters say how many were received, written and dropped).
``AML_MODEL_DC_DEBUG=true`` also prints the rows, as Azure's debug mode did.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from mlops_backend import collector as _collection

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _part(value: object) -> str:
    """A path component from a name (no slashes, no dot-dot)."""
    return _SAFE.sub("_", str(value)).strip(".") or "default"


class ModelDataCollector:
    """Collects model inputs and predictions as CSV (Azure ML's class, same constructor and methods)."""

    AML_DC_CORRELATION_HEADER = "$aml_dc_correlation_id"
    AML_DC_SCORING_TIMESTAMP_HEADER = "$aml_dc_scoring_timestamp"
    AML_DC_BOUNDARY_HEADER = "$aml_dc_boundary"
    AML_WORKSPACE_HEADER = "$aml_workspace"
    AML_SERVICE_NAME_HEADER = "$aml_service_name"
    AML_MODEL_NAME_HEADER = "$aml_model_name"
    AML_MODEL_VERSION_HEADER = "$aml_model_version"
    AML_REQUEST_ID_HEADER = "$aml_request_id"
    CORRELATION_HEADERS = (AML_DC_CORRELATION_HEADER, AML_DC_SCORING_TIMESTAMP_HEADER, AML_DC_BOUNDARY_HEADER,
                           AML_WORKSPACE_HEADER, AML_SERVICE_NAME_HEADER, AML_MODEL_NAME_HEADER,
                           AML_MODEL_VERSION_HEADER, AML_REQUEST_ID_HEADER)

    def __init__(self, model_name: str, designation: str = "default", feature_names: list[str] | None = None,
                 workspace: str = "default/default/default", webservice_name: str = "default",
                 model_version: str = "default", collection_name: str = "default", *,
                 identifier: str | None = None, **_: Any) -> None:
        if identifier is not None:  # the SDK's first releases called the designation "identifier"
            designation = identifier
        self.model_name = model_name
        self.designation = designation
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.workspace = workspace.lower()
        self.service_name = (os.environ.get("SERVICE_NAME", webservice_name) if webservice_name == "default"
                             else webservice_name)
        self.model_version = str(model_version) if model_version != "default" else _model_version(model_name)
        self.collection_name = collection_name
        self._debug = os.environ.get("AML_MODEL_DC_DEBUG", "").lower() == "true"
        self._enabled = _collection.current() is not None
        if not self._enabled and not self._debug:
            print("Data collection is not enabled: deploy with --collect to record what ModelDataCollector "
                  "collects (or set AML_MODEL_DC_DEBUG=true to print it).", file=sys.stderr)
        self._inputs = designation == "inputs"
        #: Rows carry the correlation columns ("inputs" always; others once add_correlations was used).
        self._correlation = self._inputs

    # -- Azure's methods --------------------------------------------------------------------

    def collect(self, input_data: Any, user_correlation_id: str = "") -> dict[str, Any] | None:
        """Record ``input_data`` (a row, a list of rows, a numpy array or a pandas DataFrame).

        Returns:
            For the ``inputs`` designation, the correlation values added to each row (give them to
            :meth:`add_correlations` for the predictions); otherwise None.
        """
        if not self._enabled and not self._debug:
            return None
        correlations = None
        if self._inputs:
            correlations = self._correlations(user_correlation_id)
            input_data = self.add_correlations(input_data, correlations)
        header, rows, count = self._table(input_data)
        if rows is None:
            return None
        if self._debug:
            sys.stdout.write(rows.decode())
        active = _collection.current()
        if self._enabled and active is not None:
            active.csv(self._path(active.folder), header, rows, count)
        return correlations

    def add_correlations(self, input_data: Any, correlations: dict[str, Any] | None) -> Any:
        """``input_data`` with the correlation values appended to each row (as ``collect`` returned them)."""
        if correlations is None:
            return input_data
        self._correlation = True  # the CSV header gets the correlation columns, as Azure's did
        values = [correlations[h] for h in self.CORRELATION_HEADERS]
        if "pandas" in sys.modules:
            import pandas as pd

            if isinstance(input_data, pd.DataFrame):
                frame = input_data.copy()
                for name in self.CORRELATION_HEADERS:
                    frame[name] = correlations[name]
                return frame
        return [[*row, *values] for row in _rows(input_data)]

    # -- ours -------------------------------------------------------------------------------

    def _correlations(self, user_id: str) -> dict[str, Any]:
        generated = str(uuid.uuid4())
        active = _collection.current()
        return {
            self.AML_DC_CORRELATION_HEADER: f"{user_id}-{generated}" if user_id else generated,
            self.AML_DC_SCORING_TIMESTAMP_HEADER: datetime.datetime.now(datetime.timezone.utc)
            .replace(tzinfo=None).isoformat(),
            self.AML_DC_BOUNDARY_HEADER: 60 * 24,
            self.AML_WORKSPACE_HEADER: self.workspace,
            self.AML_SERVICE_NAME_HEADER: self.service_name,
            self.AML_MODEL_NAME_HEADER: self.model_name,
            self.AML_MODEL_VERSION_HEADER: self.model_version,
            self.AML_REQUEST_ID_HEADER: (active.request_id.decode("latin-1") if active is not None and active.request_id
                                         else "00000000-0000-0000-0000-000000000000"),
        }

    def _table(self, data: Any) -> tuple[bytes, bytes | None, int]:
        """The CSV header, the rows (None: not collectable) and how many rows."""
        columns = self.feature_names
        if "pandas" in sys.modules:
            import pandas as pd

            if isinstance(data, pd.DataFrame):
                columns = [str(c) for c in data.columns]
                data = data.to_numpy().tolist()
        try:
            rows = _rows(data)
        except TypeError:
            print(f"ModelDataCollector.collect: cannot collect a {type(data).__name__}: give a list, a numpy "
                  "array or a pandas DataFrame.", file=sys.stderr)
            return b"", None, 0
        if columns is not None and self._correlation and len(columns) < len(rows[0] if rows else columns):
            columns = [*columns, *self.CORRELATION_HEADERS]
        return (_csv([columns]) if columns else b""), _csv(rows), len(rows)

    def _path(self, root: Path) -> Path:
        today = datetime.datetime.now(datetime.timezone.utc)
        return (root / "modeldata" / Path(*[_part(p) for p in self.workspace.split("/")]) / _part(self.service_name)
                / _part(self.model_name) / _part(self.model_version) / _part(self.designation)
                / f"{today:%Y}" / f"{today:%m}" / f"{today:%d}" / "data.csv")


def _rows(data: Any) -> list[list[Any]]:
    """Rows from a row, a list of rows or a numpy array."""
    tolist = getattr(data, "tolist", None)
    if callable(tolist):
        data = tolist()
    if not isinstance(data, (list, tuple)):
        raise TypeError(type(data).__name__)
    if data and all(isinstance(r, (list, tuple)) for r in data):
        return [list(r) for r in data]
    return [list(data)]


def _csv(rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def _model_version(model_name: str) -> str:
    """The deployed version of ``model_name``: the server's, else the newest in the model folder's layout."""
    if os.environ.get("MLOPS_MODEL_NAME") == model_name and os.environ.get("MLOPS_MODEL_VERSION"):
        return os.environ["MLOPS_MODEL_VERSION"]
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if model_dir:
        folder = Path(model_dir)
        for candidate in (folder / model_name, folder.parent if folder.parent.name == model_name else None):
            if candidate is not None and candidate.is_dir():
                versions = [p.name for p in candidate.iterdir() if p.name.isdigit()]
                if versions:
                    return max(versions, key=int)
    return "default"


__all__ = ["ModelDataCollector"]
