"""mlops_backend: the runtime that serves a deployed model wherever it runs.

It goes into every image, so it stays small: it never imports mlops_magics, IPython, Jupyter,
matplotlib or the docker SDK. The scoring server, entry-script loader, Azure ML compatibility
shims, data collector, edge agent and FPGA emulator live here.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: Where Azure ML's images put the app (entry script and assets).
APP_ROOT = "/var/azureml-app"
#: The port the scoring server listens on in images, as in Azure ML.
DEFAULT_PORT = 5001

#: What the server itself needs installed, besides the model's own libraries (kept in step with the
#: package's dependencies; isolated environments and images install exactly these).
RUNTIME_REQUIREMENTS = ("uvicorn>=0.30", "httptools>=0.6", "orjson>=3.9", "werkzeug>=3.0")
