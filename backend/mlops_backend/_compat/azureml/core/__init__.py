"""The part of ``azureml.core`` a deployed entry script uses: ``Model.get_model_path``."""

from azureml.core.model import Model

__all__ = ["Model"]
