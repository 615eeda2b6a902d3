def init():
    pass


def run(data, request_headers):
    return {"data": data, "headers": request_headers}
