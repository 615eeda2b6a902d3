"""Same as ``azureml.contrib.services.aml_request``."""

from azureml.contrib.services import aml_request as _impl
from azureml.contrib.services.aml_request import AMLRequest, rawhttp


def __getattr__(name: str) -> object:
    if name == "_rawHttpRequested":
        return _impl._rawHttpRequested
    raise AttributeError(name)


__all__ = ["AMLRequest", "rawhttp"]
