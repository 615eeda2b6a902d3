import time


def init():
    pass


def run(data):
    if data == "fast":
        return "done"
    try:
        time.sleep(30)
    except Exception:  # noqa: BLE001 - the point: a script that swallows everything
        return "the timeout must not be an Exception a script can swallow"
    return "slept"
