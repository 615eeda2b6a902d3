"""How registry records show themselves: listings and HTML cards of versions, deployments, endpoints and images."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from mlops_magics.display import card, human_size, table, when
from mlops_magics.registry import trust

if TYPE_CHECKING:
    from mlops_magics.registry.records import Deployment, Endpoint, Image, Lineage, ModelVersion

_INNER = "border-collapse:collapse;font-size:11px;margin-top:2px"
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


#: Signature columns a card shows as a table; past this many the table folds into a <details> (first few named).
SHOWN_COLUMNS = 8


def _json_block(value: Any) -> str:
    return f"<pre style='margin:0;font-size:11px'>{escape(json.dumps(value, indent=1, default=str))}</pre>"


def schema_summary(schema: Mapping[str, Any] | None) -> str:
    """One line for an input or output schema: 'dataframe, 13 columns', 'tensor float64 [-1, 4]', 'list'."""
    if not schema:
        return "-"
    kind = str(schema.get("type", "?"))
    if kind == "dataframe":
        count = len(schema.get("columns") or [])
        return f"dataframe, {count} column{'s' if count != 1 else ''}"
    if kind == "tensor":
        return f"tensor {schema.get('dtype', '?')} {list(schema.get('shape') or [])}"
    if kind == "series":
        return f"series {schema.get('dtype', '?')}" + (f" {schema['name']!r}" if schema.get("name") else "")
    return kind


def _columns_html(columns: Sequence[Mapping[str, Any]]) -> str:
    """A name/type table of a data frame's columns; past :data:`SHOWN_COLUMNS`, folded with the first few named."""
    rows = "".join(f"<tr><td style='padding:0 8px 0 0'>{escape(str(c.get('name')))}</td>"
                   f"<td style='padding:0;color:#616161'>{escape(str(c.get('dtype', '')))}</td></tr>" for c in columns)
    grid = f"<table style='{_INNER}'>{rows}</table>"
    if len(columns) <= SHOWN_COLUMNS:
        return grid
    first = ", ".join(str(c.get("name")) for c in columns[:3])
    return (f"<details><summary>{len(columns)} columns: {escape(first)}, ... (show all)</summary>{grid}</details>")


def signature_html(signature: Mapping[str, Any]) -> str:
    """The inputs (a name/type table for a data frame) and outputs of a signature, compactly."""
    inputs = signature.get("inputs") or {}
    parts = [f"in: {escape(schema_summary(inputs))}"]
    if signature.get("outputs"):
        parts.append(f"out: {escape(schema_summary(signature['outputs']))}")
    line = " &middot; ".join(parts)
    if inputs.get("type") == "dataframe" and inputs.get("columns"):
        return line + _columns_html(list(inputs["columns"]))
    return line


def lineage_line(lineage: Lineage) -> str:
    """Where a version came from, in one line: 'notebook 01.ipynb, cell [12], git 1a2b3c4d, from iris:1'."""
    parts = []
    if lineage.notebook:
        parts.append(f"notebook {lineage.notebook.rsplit('/', 1)[-1]}")
    elif lineage.script:
        parts.append(f"script {lineage.script.rsplit('/', 1)[-1]}")
    if lineage.cell_execution_count is not None:
        parts.append(f"cell [{lineage.cell_execution_count}]")
    if lineage.git_commit:
        parts.append(f"git {lineage.git_commit[:8]}")
    if lineage.derived_from:
        parts.append(f"from {lineage.derived_from}")
    return ", ".join(parts) or "-"


def model_version_html(v: ModelVersion) -> str:
    """A compact HTML card for one version: what it is, signature as a name/type table, lineage in one line; the
    files, hashes and raw JSON in a closed <details> (the card stays short in a browser beside its buttons)."""
    framework = " ".join(x for x in (v.framework, v.framework_version) if x)
    fields: list[tuple[str, str]] = [
        ("model", escape(v.flavor + (f" ({framework})" if framework else ""))
         + f", {escape(human_size(v.size))}, {len(v.files)} file{'s' if len(v.files) != 1 else ''}"),
    ]
    if v.tags:
        fields.append(("tags", escape(", ".join(f"{k}={val}" for k, val in sorted(v.tags.items())))))
    if v.description:
        fields.append(("description", escape(v.description)))
    fields += [("created", escape(f"{when(v.created_at)} by {v.created_by}")), ("trust", trust_html(v))]
    if v.signature:
        fields.append(("signature", signature_html(v.signature)))
    lineage = v.lineage.as_dict()
    if lineage:
        fields.append(("lineage", escape(lineage_line(v.lineage))))
    more = [f"<div>sha256 <code>{v.sha256}</code></div>",
            f"<div>files: {escape(', '.join(f'{f.path} ({human_size(f.size)})' for f in v.files[:50]))}"
            + (f" and {len(v.files) - 50} more" if len(v.files) > 50 else "") + "</div>"]
    if v.origin_path:
        more.append(f"<div>registered from <code>{escape(v.origin_path)}</code></div>")
    if lineage:
        more.append("<div>lineage</div>" + _json_block(lineage))
    if v.signature:
        more.append("<div>signature</div>" + _json_block(dict(v.signature)))
    fields.append(("details", f"<details><summary>files, sha256, raw JSON</summary>{''.join(more)}</details>"))
    aliases = "".join(f" <code>@{escape(a)}</code>" for a in v.aliases)
    return card(f"<strong>{escape(v.name)}</strong> version <strong>{v.version}</strong>{aliases}", fields)


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


def deploy_command(d: Deployment) -> str:
    """The ``%deploy`` line that deploys ``d`` again as it was (model version, name, target, workers, options)."""
    parts = [f"%deploy {d.model_name}:{d.model_version}"]
    if d.name != d.model_name:
        parts.append(f"--name {d.name}")
    if d.target != "local":
        parts.append(f"--target {d.target}")
    if int(d.config.get("workers") or 1) > 1:
        parts.append(f"--workers {d.config['workers']}")
    if d.config.get("key_file"):
        parts.append("--auth")
    if d.config.get("isolated"):
        parts.append("--isolated")
    rate = d.config.get("sample_rate")
    if d.config.get("collect"):
        parts.append("--collect" if rate in (None, 1, 1.0) else f"--sample-rate {rate}")
    return " ".join(parts)


def not_serving(d: Deployment) -> str:
    """Why a deployment that is not live cannot answer, since when, and the line that deploys it again.

    ``d.updated_at`` is when its state was recorded: the undeploy, the failed start, or when it was found stopped.
    """
    since = when(d.updated_at)
    again = f"Deploy it again with {deploy_command(d)}"
    what = f"{d.model_name}:{d.model_version} on {d.target}"
    if d.state == "deleted":
        return f"Service {d.name!r} was undeployed on {since} (it served {what}). {again}."
    if d.state == "stopped":
        return (f"Service {d.name!r} is not running: its server stopped (found so on {since}; it served {what}). "
                f"%logs {d.name} shows how it ended. {again}.")
    if d.state == "failed":
        return (f"Service {d.name!r} failed to start on {since} ({what}): %logs {d.name} shows why. Fix it, then "
                f"{again[0].lower()}{again[1:]}.")
    return f"Service {d.name!r} is {d.state} (since {since}; {what}). {again}."


def deployments_html(items: Sequence[Deployment], details: Mapping[str, str] | None = None) -> str:
    """An HTML table of deployments (with a column of ``details`` by name, when there are any)."""
    if not items:
        return "<p><em>No deployments.</em></p>"
    rows = [{"name": d.name, "model": f"{d.model_name}:{d.model_version}", "target": d.target, "state": d.state,
             "url": d.url or "", "updated": when(d.updated_at),
             **({"details": (details or {}).get(d.name, "")} if details else {})} for d in items]
    return table(rows)


def routing_text(routing: Mapping[str, Any]) -> str:
    """An endpoint's routing in one line: ``blue 90% (iris-blue), green 10% (iris-green); shadow green 100%; sticky
    header x-user; generation 3``."""
    members = ", ".join(f"{m['name']} {m['weight']}% ({m['service']})" for m in routing.get("members") or ())
    parts = [members or "no members"]
    shadow = routing.get("shadow")
    if shadow:
        parts.append(f"shadow {shadow['name']} {shadow['percent']}%")
    if routing.get("sticky_header"):
        parts.append(f"sticky header {routing['sticky_header']}")
    parts.append(f"generation {routing.get('generation', 0)}")
    return "; ".join(parts)


def endpoint_html(e: Endpoint) -> str:
    """An HTML card for one endpoint: where it is, its state, how it routes to its members."""
    colour = {"running": "#2e7d32", "failed": "#c62828", "unhealthy": "#ef6c00"}.get(e.state, "#616161")
    rows = [
        ("target", escape(e.target)),
        ("state", f'<span style="color:{colour};font-weight:bold">{escape(e.state)}</span>'),
    ]
    if e.url:
        rows.append(("scoring URI", f"<code>{escape(e.url)}/score</code>"))
    rows += [("routing", escape(routing_text(e.routing))), ("updated", escape(when(e.updated_at)))]
    return card(f"<strong>{escape(e.name)}</strong>", rows)


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
