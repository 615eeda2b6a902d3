"""Running ``mlops`` in the test's process: ``cli.main([...])`` with its output captured."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from mlops_magics import cli


@dataclass(frozen=True)
class Done:
    """What one ``mlops`` command did."""

    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


def mlops(capsys: pytest.CaptureFixture[str], *argv: str) -> Done:
    """Run ``mlops ARGV...`` through ``cli.main``; its exit status and what it printed."""
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return Done(code, captured.out, captured.err)
