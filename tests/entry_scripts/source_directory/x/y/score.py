"""A real script's layout: the entry script deep in the source directory opens a file by a path relative to the
directory the server was started in (in Azure's images, the app root holding ``source_directory``)."""

import json
import os


def init():
    global extra
    with open("./source_directory/extradata.json") as f:
        extra = json.load(f)


def run(data):
    return {"extra": extra, "cwd": os.getcwd()}
