import os


def init():
    raise FileNotFoundError(os.path.join(os.environ.get("AZUREML_MODEL_DIR", "."), "missing-model.pkl"))


def run(data):
    return data
