"""The exception types ``azureml.core.model.Model`` raises."""


class AzureMLException(Exception):
    """Base of the Azure ML SDK's exceptions."""

    def __init__(self, exception_message: str = "", *args: object, **kwargs: object) -> None:
        super().__init__(exception_message, *args)
        self.message = exception_message


class WebserviceException(AzureMLException):
    """A model or service operation failed."""


class ModelNotFoundException(WebserviceException):
    """The model is not deployed where it was looked for."""
