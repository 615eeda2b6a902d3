import json


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data)
    return {"received": data, "type": type(data).__name__}
