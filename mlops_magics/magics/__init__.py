"""IPython magics: thin adapters over :mod:`mlops_magics.api`, one module per family, as the API has.

Each magic parses its arguments, calls one API function and returns its result. Every
:class:`~mlops_magics.errors.MlopsError` becomes a plain ``UsageError``: a message, no traceback.
"""

from __future__ import annotations

from mlops_magics.magics.authoring import AuthoringMagics
from mlops_magics.magics.deployments import DeploymentMagics
from mlops_magics.magics.edge import EdgeMagics
from mlops_magics.magics.endpoints import EndpointMagics
from mlops_magics.magics.fpga import FpgaMagics
from mlops_magics.magics.images import ImageMagics
from mlops_magics.magics.models import ModelMagics
from mlops_magics.magics.monitoring import MonitoringMagics
from mlops_magics.magics.quality import QualityMagics

#: Every family of magics, registered by ``%load_ext mlops_magics``.
MAGICS = (ModelMagics, AuthoringMagics, ImageMagics, DeploymentMagics, EndpointMagics, EdgeMagics, QualityMagics,
          MonitoringMagics, FpgaMagics)

__all__ = ["MAGICS", "AuthoringMagics", "DeploymentMagics", "EdgeMagics", "EndpointMagics", "FpgaMagics",
           "ImageMagics",
           "ModelMagics", "MonitoringMagics", "QualityMagics"]
