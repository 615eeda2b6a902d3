"""Same as ``azureml.contrib.services.aml_response``."""

from azureml.contrib.services.aml_response import AMLResponse

__all__ = ["AMLResponse"]
