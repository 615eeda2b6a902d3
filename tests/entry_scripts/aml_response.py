from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


def run(data):
    if data == "created":
        return AMLResponse({"id": 7}, 201, {"Location": "/items/7", "X-Multi": "a, b"}, json_str=True)
    if data == "teapot":
        return AMLResponse("short and stout", 418, {"Content-Type": "text/plain"})
    if data == "unavailable":
        return AMLResponse("try later", 503)
    if data == "empty":
        return AMLResponse(None, 200)
    return AMLResponse(b"\x00\x01\x02", 200, {"Content-Type": "application/octet-stream"})
