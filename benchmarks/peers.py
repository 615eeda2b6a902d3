"""Install the peer servers we compare against, each in its own virtual environment under .bench/.

    python benchmarks/peers.py azmlinfsrv mlflow    # idempotent: an environment that works is kept

- azmlinfsrv: Azure ML's inference server (``azureml-inference-server-http``), with inference-schema,
  numpy, pandas and scikit-learn so the same entry scripts and models run on it;
- mlflow: MLflow, for ``mlflow models serve`` (with scikit-learn).
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / ".bench"
#: name -> (packages, command, module whose import proves the environment works)
PEERS = {
    "azmlinfsrv": (["azureml-inference-server-http", "inference-schema", "numpy", "pandas", "scikit-learn"],
                   "azmlinfsrv", "azureml_inference_server_http"),
    "mlflow": (["mlflow", "scikit-learn", "pandas"], "mlflow", "mlflow"),
}


def executable(name: str) -> Path:
    """The peer's command inside its environment (it may not exist yet)."""
    return ROOT / name / "bin" / PEERS[name][1]


def ensure(name: str) -> Path:
    """Create the peer's environment unless its command already runs; return the command's path."""
    exe = executable(name)
    folder = ROOT / name
    python = folder / "bin" / "python"
    if exe.exists() and subprocess.run([str(python), "-c", f"import {PEERS[name][2]}"],
                                       capture_output=True, timeout=300).returncode == 0:
        return exe
    print(f"installing {name} into {folder} ...", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    pip = [str(python), "-m", "pip", "install", "-qq", "--disable-pip-version-check"]
    subprocess.run([*pip, *PEERS[name][0]], check=True)
    return exe


def main(argv: list[str]) -> int:
    unknown = [n for n in argv if n not in PEERS]
    if unknown or not argv:
        print(f"usage: peers.py {' '.join(PEERS)} (unknown: {', '.join(unknown) or 'none given'})", file=sys.stderr)
        return 2
    for name in argv:
        print(ensure(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
