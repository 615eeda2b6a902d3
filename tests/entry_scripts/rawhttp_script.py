import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    assert isinstance(request, AMLRequest)
    if request.method == "GET":
        return {"method": "GET", "args": request.args.to_dict(flat=False), "path": request.path}
    if request.content_type and request.content_type.startswith("multipart/form-data"):
        files = {name: {"filename": f.filename, "size": len(f.read()), "type": f.content_type}
                 for name, f in request.files.items()}
        return AMLResponse(json.dumps({"form": request.form.to_dict(), "files": files}), 200,
                           {"Content-Type": "application/json"})
    body = request.get_data()
    if request.headers.get("X-Want") == "bytes":
        return AMLResponse(body[::-1], 200, {"Content-Type": "application/octet-stream"})
    return {"method": request.method, "length": len(body), "first": body[:1].hex(),
            "content_type": request.content_type}
