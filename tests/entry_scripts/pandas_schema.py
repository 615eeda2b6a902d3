import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

sample = pd.DataFrame({"age": [30], "income": [5000.0], "city": ["Lyon"]})


def init():
    pass


@input_schema("frame", PandasParameterType(sample))
@output_schema(StandardPythonParameterType({"rows": 1, "mean_income": 5000.0, "cities": ["Lyon"]}))
def run(frame):
    assert isinstance(frame, pd.DataFrame), type(frame)
    return {"rows": len(frame), "mean_income": float(frame["income"].mean()), "cities": list(frame["city"])}
