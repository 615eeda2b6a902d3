"""Aliases: pointing a name such as ``production`` at a version, moving it (recorded), its history."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from mlops_magics.errors import MlopsError
from mlops_magics.registry import AliasEvent, ModelRef, ModelVersion, Registry, or_default, parse_ref


@dataclass(frozen=True)
class AliasSet:
    """Where an alias points after :func:`set_alias`, shown in one line: ``iris@production -> iris:2 (was iris:1)``;
    a gated alias says so: ``(new alias; gated: only versions that passed %validate)``.

    The version's card is one ``%model`` away (or ``.version`` here): re-printing it on every move buried the
    notebook in signature JSON.
    """

    #: The version the alias points at now.
    version: ModelVersion
    alias: str
    #: The version it pointed at before (None: the alias is new).
    previous: int | None = None
    #: The alias only points at versions whose last validation passed (``require_validation``, now or before).
    gated: bool = False

    @property
    def ref(self) -> str:
        """``NAME:VERSION`` of the version the alias points at."""
        return self.version.ref

    def __str__(self) -> str:
        v = self.version
        if self.previous is None:
            moved = "new alias"
        elif self.previous == v.version:
            moved = "unchanged"
        else:
            moved = f"was {v.name}:{self.previous}"
        gate = "; gated: only versions that passed %validate" if self.gated else ""
        return f"{v.name}@{self.alias} -> {v.ref} ({moved}{gate})"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:

        return f"<code>{escape(str(self))}</code>"


def set_alias(ref: str, alias: str, *, require_validation: bool = False,
              registry: Registry | None = None) -> AliasSet:
    """Point ``alias`` at a version, moving it if it is set; every move is recorded.

    Args:
        require_validation: gate the alias: from now on it only points at versions whose last validation
            passed (see :func:`mlops_magics.validation.validate`).

    Returns:
        The version it points at now, the one before and whether the alias is gated, shown in one line.

    Raises:
        ConflictError: the alias is gated and the version has not passed its validation.
    """
    reg = or_default(registry)
    try:
        previous: int | None = reg.get(ModelRef(parse_ref(ref).name, alias=alias)).version
    except MlopsError:  # no such alias yet (or no such model: set_alias says so)
        previous = None
    version = reg.set_alias(ref, alias, require_validation=require_validation)
    return AliasSet(version, alias, previous, gated=alias in reg.gated_aliases(version.name))


def remove_alias(name: str, alias: str, *, registry: Registry | None = None) -> str:
    """Remove an alias from a model (recorded in its history); return the model's name.

    Args:
        name: the model: ``NAME``, or any reference to one of its versions (``NAME:VERSION``, ``NAME@ALIAS``).
    """
    model = parse_ref(name).name
    or_default(registry).remove_alias(model, alias)
    return model


class AliasHistory(list[AliasEvent]):
    """Alias moves, oldest first, shown as a table."""

    def __repr__(self) -> str:
        if not self:
            return "No alias has been set."
        return "\n".join(
            f"{e.at.astimezone():%Y-%m-%d %H:%M:%S}  {e.name}@{e.alias} -> "
            f"{'removed' if e.version is None else e.version}  by {e.by}"
            for e in self
        )

    def _repr_html_(self) -> str:

        rows = "".join(
            f"<tr><td>{e.at.astimezone():%Y-%m-%d %H:%M:%S}</td><td>{escape(e.alias)}</td>"
            f"<td>{'removed' if e.version is None else e.version}</td><td>{escape(e.by)}</td></tr>"
            for e in self
        )
        return ("<table><thead><tr><th>at</th><th>alias</th><th>version</th><th>by</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>")


def alias_history(name: str, alias: str | None = None, *, registry: Registry | None = None) -> AliasHistory:
    """Every move of a model's aliases (or of one alias), oldest first.

    Args:
        name: the model: ``NAME``, or any reference to one of its versions (``NAME:VERSION``, ``NAME@ALIAS``).
    """
    return AliasHistory(or_default(registry).alias_history(parse_ref(name).name, alias))
