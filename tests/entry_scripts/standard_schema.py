from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("text", StandardPythonParameterType("hello"))
@input_schema("repeat", StandardPythonParameterType(2))
@output_schema(StandardPythonParameterType("hellohello"))
def run(text, repeat, request_headers):
    return text * repeat + request_headers.get("X-Suffix", "")
