import os

from azureml.core.model import Model


def init():
    global paths
    paths = {
        "first": Model.get_model_path("first"),
        "second": Model.get_model_path("second", version=2),
        "second_latest": Model.get_model_path("second"),
    }


def run(data):
    return {name: open(path).read() for name, path in paths.items()} | {"root": os.environ["AZUREML_MODEL_DIR"]}
