"""A @rawhttp run() that says which request it got, whatever the method (OPTIONS included, as azmlinfsrv passes it)."""

from azureml.contrib.services.aml_request import rawhttp


def init():
    pass


@rawhttp
def run(request):
    return {"method": request.method, "length": len(request.get_data()), "args": request.args.to_dict()}
