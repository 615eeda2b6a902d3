"""AMLResponse headers that collide with the server's own: request ids, the run-failed flag, a lowercase
content type; and run() returning None."""

from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


def run(data):
    if data == "none":
        return None
    if data == "ids":
        return AMLResponse("ids", 200, {"x-request-id": "A, x", "x-ms-request-id": "B", "x-ms-client-request-id": "C"})
    if data == "flag":
        return AMLResponse("flag", 200, {"x-ms-run-function-failed": "custom"})
    if data == "flag-500":
        return AMLResponse("flag", 500, {"x-ms-run-function-failed": "custom"})
    if data == "content-type":
        return AMLResponse("typed", 200, {"Content-Type": "text/plain"})
    if data == "lowercase-content-type":
        return AMLResponse("typed", 200, {"content-type": "text/plain"})
    return {"data": data}
