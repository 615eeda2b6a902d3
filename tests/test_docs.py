"""The README, the changelog and the docstrings are artifacts too: check what can be checked."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import mlops_magics as mm

ROOT = Path(__file__).resolve().parent.parent


def test_readme_opens_with_exactly_the_two_commands_and_make_has_them() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block is not None and text.index("```bash") < text.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block.group(1).strip().splitlines()]
    assert commands == ["make quickstart", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^quickstart:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_api_name_the_readme_uses_exists() -> None:
    text = (ROOT / "README.md").read_text()
    for name in set(re.findall(r"\bmm\.(\w+)\(", text)):
        assert callable(getattr(mm, name, None)), f"README uses mm.{name}, which does not exist"


def test_every_public_api_function_has_a_summary() -> None:
    for name in mm.__all__:
        obj = getattr(mm, name)
        if inspect.isfunction(obj):
            assert obj.__doc__ and obj.__doc__.strip().split("\n")[0].endswith("."), name


def test_changelog_has_an_unreleased_section() -> None:
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
