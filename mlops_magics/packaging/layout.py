"""A deployment's files on disk, laid out as Azure ML lays them out (every target starts from this)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mlops_magics.authoring.environment import Environment
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Registry


def write_layout(registry: Registry, spec: DeploySpec, folder: Path) -> Path:
    """Lay a deployment out as Azure ML does; return the entry script's path.

    ``app/`` (score.py and assets), ``environment/`` (requirements.txt, conda.yaml, when set) and
    ``azureml-models/<name>/<version>/`` (the verified model files, hard-linked when possible).
    """
    app = folder / "app"
    app.mkdir(parents=True)
    script = app / "score.py"
    script.write_text(spec.script)
    if spec.inference.assets_sha256:
        source = registry.artifacts.verify(spec.inference.assets_sha256, spec.inference.asset_files)
        for item in sorted(source.iterdir()):
            target = app / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
    if spec.inference.environment:
        Environment.from_dict(spec.inference.environment).write(folder / "environment", spec.version.name)
    version = spec.version
    models = folder / "azureml-models" / version.name / str(version.version)
    artifact = registry.verified_artifact(version)
    for f in version.files:
        target = models / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(artifact / f.path, target)  # immutable, verified files: a link is a safe copy
        except OSError:
            shutil.copy2(artifact / f.path, target)
    return script
