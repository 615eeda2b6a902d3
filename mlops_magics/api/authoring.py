"""Authoring a model's deployment from the notebook: the entry script, its assets, the environment, a trial run.

The API behind ``%%score_script`` and ``%%environment``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_magics import display, flavors, signature
from mlops_magics.authoring import environment, score_script
from mlops_magics.errors import InvalidInputError
from mlops_magics.packaging import spec
from mlops_magics.registry import InferenceConfig, Registry, or_default, parse_ref
from mlops_magics.targets.client import as_table, request_body
from mlops_magics.targets.local import LocalTarget, serving_since


def _scope(reg: Registry, ref: str) -> tuple[str, int]:
    """(name, version) a configuration reference names: NAME alone means every version (0)."""
    parsed = parse_ref(ref)
    if parsed.version is None and parsed.alias is None:
        reg.get(parsed.name)  # the model must exist
        return parsed.name, 0
    return parsed.name, reg.get(parsed).version


def set_score_script(
    ref: str,
    source: str | None = None,
    *,
    file: str | Path | None = None,
    assets: Iterable[str | Path] = (),
    line_offset: int = 0,
    notebook: str | None = None,
    cell: int | None = None,
    registry: Registry | None = None,
) -> InferenceConfig:
    """Check an entry script and save it as the model's (``NAME``) or one version's script.

    Args:
        ref: ``NAME`` (every version), ``NAME:VERSION`` or ``NAME@ALIAS`` (that version).
        source: the script; it is checked, never run in this process.
        file: the file the script is read from when ``source`` is omitted (a notebook's ``%%writefile score.py``),
            recorded as where it came from; problems and tracebacks then name that file's lines.
        assets: files or folders the script needs, copied beside it in deployments.
        line_offset: lines above the script in its cell, so problems name cell lines (not with ``file``).
        notebook, cell: where it is saved from (the magic passes the notebook and the cell's ``In[n]`` number),
            recorded with the time so that :func:`script_info` can say which script is live.

    Raises:
        InvalidInputError: the script cannot be served (every problem is listed with its line); neither ``source``
            nor ``file``; the file cannot be read.
        NotFoundError: no such model, version or asset.
    """
    if source is None:
        if file is None:
            raise InvalidInputError("Give the entry script: its source, or the file it is in (file='score.py').")
        source = read_script(file)
    offset: int | None = line_offset
    if file is not None:
        offset = None  # the deployed score.py's lines are the file's own
        score_script.check(source, place=f"{Path(file).name} line")
    else:
        score_script.check(source, line_offset=line_offset)
    reg = or_default(registry)
    name, version = _scope(reg, ref)
    bundle = list(assets)
    origin = {key: value for key, value in (("notebook", notebook), ("cell", cell),
                                            ("file", None if file is None else str(file))) if value is not None}
    if not bundle:
        reg.set_inference(name, version, script=source, script_line_offset=offset, script_from=origin)
    else:
        with reg.artifacts.stage() as staging:
            for item in bundle:
                flavors.save_path(Path(item).expanduser(), staging.folder, "files")
            reg.set_inference(name, version, script=source, script_line_offset=offset,
                              assets=staging.finish(), script_from=origin)
    return reg.inference(reg.get(ref))


#: The largest entry script read from a file (a script is source code: anything bigger is a mistake).
MAX_SCRIPT_BYTES = 4 * 1024 * 1024


def read_script(file: str | Path) -> str:
    """The text of an entry script file.

    Raises:
        InvalidInputError: it cannot be read, is not UTF-8 text, or is larger than :data:`MAX_SCRIPT_BYTES`.
    """
    path = Path(file).expanduser()
    try:
        if path.stat().st_size > MAX_SCRIPT_BYTES:
            raise InvalidInputError(f"{str(file)!r} is {path.stat().st_size:,} bytes: an entry script is source code "
                                    f"(at most {MAX_SCRIPT_BYTES:,} bytes). Check the file name; ship data with "
                                    "--asset.")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"Cannot read the entry script {str(file)!r}: {exc.strerror} (relative to "
                                f"{Path.cwd()}). Write it first (%%writefile score.py), or fix the path.") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"The entry script {str(file)!r} is not UTF-8 text: give the Python file.") from None


def generate_score_script(ref: str, *, registry: Registry | None = None) -> str:
    """A default entry script for the version's flavor and signature, ready to edit."""
    return spec.default_script(or_default(registry).get(ref))


def entry_script(ref: str, *, registry: Registry | None = None) -> tuple[str, bool]:
    """The entry script a deployment of ``ref`` uses, and whether it is the generated default."""
    reg = or_default(registry)
    return spec.entry_script(reg, reg.get(ref))


@dataclass(frozen=True)
class ScriptInfo:
    """The entry script deployments of a version use, where it comes from, and which live services serve it."""

    ref: str
    source: str
    #: True: no script is saved, deployments use the generated default.
    generated: bool
    #: (service, True when it serves this very script, since when) for each live deployment of the version.
    served_by: tuple[tuple[str, bool, str], ...] = field(default=())
    #: When it was saved (local time, the date too when not today), and from which notebook and cell, where known.
    saved_at: str | None = None
    notebook: str | None = None
    cell: int | None = None
    #: What the reference configures, in words: "every version of iris" for a bare name, else the version.
    scope: str = ""
    #: The file it was read from (``--file``), where it was.
    file: str | None = None

    @property
    def origin(self) -> str:
        """Where the script comes from, in words: the cell and notebook it was saved from, and when (where known)."""
        if self.generated:
            return "the generated default (no script saved yet)"
        where = f" from cell [{self.cell}]" if self.cell is not None else ""
        if self.notebook:
            where += f" {'of' if where else 'from'} {Path(self.notebook).name}"
        if self.file:
            where = f" from the file {self.file}" + (f" (by{where.removeprefix(' from')})" if where else "")
        return f"saved{where}" + (f" at {self.saved_at}" if self.saved_at else "")

    def serving(self) -> str:
        """Which live services serve this script, and which still serve an older one ('' when none is live)."""
        parts = [f"{name} serves it (since {since})" if same else
                 f"{name} serves an older script (since {since}): %reload {name} to serve this one"
                 for name, same, since in self.served_by]
        return "; ".join(parts)

    def saved_note(self) -> str:
        """What a ``%%score_script`` cell says once it saved the script: for what, its size, and who serves it."""
        serving = self.serving() or f"no live deployment serves it yet (%deploy {self.ref.split(':')[0]} serves it)"
        lines = len(self.source.splitlines())
        return f"Saved a {lines}-line entry script for {self.scope or self.ref}; {serving}."

    def generated_note(self) -> str:
        """What ``%score_script NAME --generate`` says: what was generated, and whether anything is saved."""
        saved = ("Deployments use this same default until a script is saved." if self.generated else
                 f"It is not saved: {self.ref} still uses its saved script ({len(self.source.splitlines())} lines, "
                 f"{self.origin}) until that cell runs.")
        return (f"Generated a default entry script for {self.ref} into the next cell; run that cell to save it. "
                f"{saved}")

    def __repr__(self) -> str:
        serving = self.serving()
        head = f"# entry script for {self.ref}: {self.origin}" + (f"\n# {serving}" if serving else
                                                                  "\n# no live deployment serves it")
        return f"{head}\n{self.source}"


def script_info(ref: str, *, registry: Registry | None = None) -> ScriptInfo:
    """The entry script deployments of ``ref`` use: its source, origin, and the live services that serve it.

    Raises:
        NotFoundError: no such model, version or alias.
    """
    reg = or_default(registry)
    version = reg.get(ref)
    source, generated = spec.entry_script(reg, version)
    digest = hashlib.sha256(source.encode()).hexdigest()
    served = tuple((d.name, d.config.get("script_sha256") == digest, serving_since(d)) for d in reg.deployments()
                   if d.is_live and (d.model_name, d.model_version) == (version.name, version.version))
    config = reg.inference(version)
    saved_at = display.clock(config.script_saved_at) if config.script_saved_at and not generated else None
    return ScriptInfo(version.ref, source, generated, served, saved_at=saved_at,
                      notebook=None if generated else config.script_notebook,
                      cell=None if generated else config.script_cell,
                      file=None if generated else config.script_file,
                      scope=f"every version of {version.name}" if _scope(reg, ref)[1] == 0 else version.ref)


def set_environment(
    ref: str,
    text: str | None = None,
    *,
    from_kernel: bool = False,
    line_offset: int = 0,
    write_to: str | Path | None = None,
    registry: Registry | None = None,
) -> environment.Environment:
    """Set the environment a model's deployments install: from conda YAML or pip lines, or from this kernel.

    Args:
        ref: ``NAME`` (every version) or ``NAME:VERSION`` / ``NAME@ALIAS`` (one version).
        text: a conda environment YAML or pip requirement lines.
        from_kernel: build it from what the entry script and the flavor import, pinned to this kernel.
        write_to: also write ``requirements.txt`` and ``conda.yaml`` into this folder (made if missing).

    Returns:
        The environment, with warnings where a pin differs from what the model was trained with.

    Raises:
        InvalidInputError: malformed YAML or requirement (with its cell line), or neither/both sources given.
    """
    if (text is None) == (not from_kernel):
        raise InvalidInputError("Give the environment (conda YAML or pip lines), or from_kernel=True; not both.")
    reg = or_default(registry)
    name, scope = _scope(reg, ref)
    version = reg.get(ref)
    if from_kernel:
        env = environment.from_kernel(entry_script(version.ref, registry=reg)[0], flavor=version.flavor,
                                      framework=version.framework,
                                      serializer=version.flavor_options.get("serializer"))
    else:
        env = environment.parse(text or "", line_offset=line_offset)
    warnings = (*env.warnings, *environment.kernel_mismatches(env, version.framework, version.framework_version))
    reg.set_inference(name, scope, environment=env.as_dict())
    result = environment.Environment(env.python, env.pip, env.conda, env.channels, warnings)
    if write_to is not None:
        result.write(Path(write_to).expanduser(), name)
    return result


@dataclass(frozen=True)
class TrialResult:
    """What a trial run of an entry script answered."""

    model: str
    status: int
    output: Any
    log: str

    @property
    def ok(self) -> bool:
        return self.status < 400

    def __repr__(self) -> str:
        head = f"{self.model}: run(sample) answered {self.status}"
        return f"{head}\n{self.output!r}" if self.ok else f"{head}: {self.output!r}\n{self.log}"


def try_score_script(ref: str, *, sample: Any = None, registry: Registry | None = None) -> TrialResult:
    """Run ``init()`` and ``run(sample)`` in a clean server process, the model laid out as deployed.

    Args:
        sample: the data to send (default: the registered input example).

    Raises:
        InvalidInputError: no sample given and none registered.
        DeployError: the script could not start (import or init() failed); log tail mapped to cell lines.
    """
    reg = or_default(registry)
    version = reg.get(ref)
    if sample is None:
        if version.input_example is None:
            raise InvalidInputError(f"{version.ref} has no registered input example: pass a sample (%score_script "
                                    f"{version.name} --test --sample X[:2]), or register the model with --sample.")
        sample = signature.rebuild(dict(version.input_example))
    trial = spec.deploy_spec(reg, f"trial-{version.name}", version.ref)
    status, value, log = LocalTarget(reg).trial(trial, request_body(sample))
    return TrialResult(version.ref, status, as_table(value) if status < 400 else value, log)
