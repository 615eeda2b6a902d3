import json

import joblib
import numpy as np
from azureml.core.model import Model


def init():
    global model
    model = joblib.load(Model.get_model_path("sklearn_regression_model"))


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    return {"result": model.predict(data).round(1).tolist(), "unit": "rounded"}
