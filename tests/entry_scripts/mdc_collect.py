"""An Azure ML entry script of 2019 that collects its inputs and predictions with ModelDataCollector."""

import json

from azureml.monitoring import ModelDataCollector


def init():
    global inputs_dc, prediction_dc, legacy_dc
    inputs_dc = ModelDataCollector("best_model", designation="inputs", feature_names=["f1", "f2", "f3"])
    prediction_dc = ModelDataCollector("best_model", designation="predictions", feature_names=["prediction"])
    legacy_dc = ModelDataCollector("best_model", identifier="signals", feature_names=["total"])


def run(raw_data):
    data = json.loads(raw_data)["data"]
    result = [sum(row) for row in data]
    correlations = inputs_dc.collect(data)
    prediction_dc.collect(prediction_dc.add_correlations([[r] for r in result], correlations))
    legacy_dc.collect([sum(result)])
    return result
