def init():
    pass


def run(data):
    if data == "bad-output":
        return object()
    raise ValueError(f"cannot score {data!r}")
