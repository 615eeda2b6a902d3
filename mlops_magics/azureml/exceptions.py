"""``azureml.exceptions`` in the kernel: the exception types SDK v1 raises, under the same names.

Every failure of the local SDK v1 layer is one of these, chained (``from``) to the :class:`~mlops_magics.errors.
MlopsError` that says what went wrong: notebooks that catch ``WebserviceException`` keep working. The first three
are the ones the deployed server's shims raise too (``mlops_backend``'s ``azureml.exceptions``), with the same
hierarchy and ``message`` attribute.
"""

from __future__ import annotations


class AzureMLException(Exception):
    """Base of the Azure ML SDK's exceptions."""

    def __init__(self, exception_message: str = "", *args: object, **kwargs: object) -> None:
        super().__init__(exception_message, *args)
        self.message = exception_message


class UserErrorException(AzureMLException):
    """A call's arguments are wrong; the message says which and what to give."""


class WebserviceException(AzureMLException):
    """A model or service operation failed."""


class ModelNotFoundException(WebserviceException):
    """The model is not deployed where it was looked for."""


class ModelPathNotFoundException(AzureMLException):
    """The model path given to register does not exist."""


class ProjectSystemException(AzureMLException):
    """A workspace could not be found or created."""


class WorkspaceException(AzureMLException):
    """A workspace operation failed."""


class ComputeTargetException(AzureMLException):
    """A compute target operation failed."""


class ActivityFailedException(AzureMLException):
    """A long operation (a package, a profile) failed."""


class AuthenticationException(AzureMLException):
    """Authentication failed (never raised locally: there is no Azure login)."""


__all__ = ["ActivityFailedException", "AuthenticationException", "AzureMLException", "ComputeTargetException",
           "ModelNotFoundException", "ModelPathNotFoundException", "ProjectSystemException", "UserErrorException",
           "WebserviceException", "WorkspaceException"]
