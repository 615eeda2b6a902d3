"""How registry records show themselves: listings and HTML cards of versions, deployments and images."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from mlops_magics.display import card, human_size, table, when
from mlops_magics.registry import trust

if TYPE_CHECKING:
    from mlops_magics.registry.records import Deployment, Image, ModelVersion

#: Rows a listing shows inline; the rest are summarised (filter, or use ``to_dataframe()``).
MAX_ROWS = 100


def version_row(v: ModelVersion) -> dict[str, Any]:
    """Return the columns a listing shows for one version."""
    return {
        "name": v.name,
        "version": v.version,
        "aliases": ", ".join(v.aliases),
        "flavor": v.flavor,
        "framework": " ".join(x for x in (v.framework, v.framework_version) if x),
        "tags": ", ".join(f"{k}={val}" for k, val in sorted(v.tags.items())),
        "size": human_size(v.size),
        "created": when(v.created_at),
        "description": v.description,
    }


#: Metric columns a listing shows inline (those most versions have first); ``to_dataframe()`` has every one.
MAX_METRIC_COLUMNS = 8


def version_rows(versions: Sequence[ModelVersion], *, every_metric: bool = False) -> list[dict[str, Any]]:
    """The rows of a listing: :func:`version_row` of each version plus a column per metric (registered ones by
    name, measured ones by name and source), blank where a version has none; values as numbers with
    ``every_metric``, else shown to 4 significant digits, at most :data:`MAX_METRIC_COLUMNS` of them."""
    found = [v.metric_columns() for v in versions]
    counts = Counter(key for metrics in found for key in metrics)
    keys = sorted(counts, key=lambda key: (-counts[key], key))
    keys = keys if every_metric else keys[:MAX_METRIC_COLUMNS]
    rows = []
    for v, metrics in zip(versions, found, strict=True):
        row = version_row(v)
        description = row.pop("description")
        for key in keys:
            value = metrics.get(key)
            column = key if key not in row else f"{key} (registered)"
            row[column] = value if every_metric else "" if value is None else f"{value:.4g}"
        row["description"] = description
        rows.append(row)
    return rows


def _more(total: int) -> str:
    return (f"... {total - MAX_ROWS} more not shown (first {MAX_ROWS} of {total}). Filter with --name/--tag "
            "or --latest, or use .to_dataframe().")


def model_versions_html(versions: Sequence[ModelVersion]) -> str:
    """An HTML table of versions, with a count; at most ``MAX_ROWS`` rows."""
    count = f"<p>{len(versions)} model version{'s' if len(versions) != 1 else ''}</p>"
    more = f"<p><em>{escape(_more(len(versions)))}</em></p>" if len(versions) > MAX_ROWS else ""
    return count + table(version_rows(versions[:MAX_ROWS])) + more


def model_versions_text(versions: Sequence[ModelVersion]) -> str:
    """A fixed-width text table of versions; at most ``MAX_ROWS`` rows."""
    if not versions:
        return "No model versions."
    if len(versions) > MAX_ROWS:
        return model_versions_text(versions[:MAX_ROWS]) + "\n" + _more(len(versions))
    rows = version_rows(versions)
    columns = [c for c in rows[0] if c != "description"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _json_block(value: Any) -> str:
    return f"<pre style='margin:0'>{escape(json.dumps(value, indent=1, default=str))}</pre>"


def model_version_html(v: ModelVersion) -> str:
    """An HTML card for one version: identity, artifact, signature, lineage."""
    fields: list[tuple[str, str]] = [
        ("flavor", escape(v.flavor)),
        ("framework", escape(" ".join(x for x in (v.framework, v.framework_version) if x) or "-")),
        ("aliases", escape(", ".join(v.aliases) or "-")),
        ("tags", escape(", ".join(f"{k}={val}" for k, val in sorted(v.tags.items())) or "-")),
        ("description", escape(v.description or "-")),
        ("artifact", f"{escape(human_size(v.size))}, {len(v.files)} file(s), sha256 <code>{v.sha256}</code>"),
        ("files", escape(", ".join(f.path for f in v.files))),
        ("created", escape(f"{when(v.created_at)} by {v.created_by}")),
        ("trust", trust_html(v)),
    ]
    if v.signature:
        fields.append(("signature", _json_block(dict(v.signature))))
    lineage = v.lineage.as_dict()
    if lineage:
        fields.append(("lineage", _json_block(lineage)))
    return card(f"<strong>{escape(v.name)}</strong> version <strong>{v.version}</strong>", fields)


def trust_html(v: ModelVersion) -> str:
    """Whether a version needs trust and has it (:func:`mlops_magics.registry.trust.status`), red when it lacks it."""
    text = escape(trust.status(v))
    if not v.trusted and trust.serve_risk(v):
        return f'<span style="color:#c62828;font-weight:bold">{text}</span>'
    return text


def deployment_html(d: Deployment) -> str:
    """An HTML card for one deployment: where it is, what it serves, its state."""
    colour = {"running": "#2e7d32", "failed": "#c62828", "unhealthy": "#ef6c00"}.get(d.state, "#616161")
    rows = [
        ("model", escape(f"{d.model_name}:{d.model_version}")),
        ("target", escape(d.target)),
        ("state", f'<span style="color:{colour};font-weight:bold">{escape(d.state)}</span>'),
    ]
    if d.url:
        link = escape(f"{d.url}/swagger.json")
        rows += [("scoring URI", f"<code>{escape(d.url)}/score</code>"),
                 ("swagger", f'<a href="{link}" target="_blank">{link}</a>')]
    if d.config.get("key_file"):
        rows.append(("auth", f"key required: <code>%keys {escape(d.name)}</code> (primary and secondary)"))
    rows.append(("updated", escape(when(d.updated_at))))
    return card(f"<strong>{escape(d.name)}</strong>", rows)


def deployments_html(items: Sequence[Deployment]) -> str:
    """An HTML table of deployments."""
    if not items:
        return "<p><em>No deployments.</em></p>"
    rows = [{"name": d.name, "model": f"{d.model_name}:{d.model_version}", "target": d.target, "state": d.state,
             "url": d.url or "", "updated": when(d.updated_at)} for d in items]
    return table(rows)


def image_html(image: Image) -> str:
    """An HTML card for one built image."""
    rows = [
        ("model", escape(image.model_ref)),
        ("image id", f"<code>{escape(image.image_id)}</code>"),
        ("size", f"{image.size / 1e6:.1f} MB"),
        ("base", escape(image.base_image + (" (GPU)" if image.gpu else ""))),
        ("built", escape(when(image.built_at))
         + (f" in {image.build_seconds:.1f} s" if image.build_seconds is not None else "")),
    ]
    return card(f"<strong>{escape(image.tag)}</strong>", rows)
