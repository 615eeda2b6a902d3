"""Plain-text and HTML views of registry records (no IPython needed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from mlops_magics import trust

if TYPE_CHECKING:
    from mlops_magics.registry.records import Deployment, Image, ModelVersion

_TABLE_STYLE = "border-collapse:collapse;font-size:12px"
_CELL = "padding:2px 8px;text-align:left;border-bottom:1px solid #ddd"


def human_size(size: int) -> str:
    """Return ``size`` bytes as '1.2 KiB', '3.4 MiB'..."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def when(moment: datetime) -> str:
    """Return a timestamp as 'YYYY-MM-DD HH:MM:SS' in local time."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


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


def table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>No model versions.</em></p>"
    head = "".join(f'<th style="{_CELL}">{escape(k)}</th>' for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{escape(str(val))}</td>' for val in row.values()) + "</tr>"
        for row in rows
    )
    return f'<table style="{_TABLE_STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


#: Rows a listing shows inline; the rest are summarised (filter, or use ``to_dataframe()``).
MAX_ROWS = 100


def _more(total: int) -> str:
    return (f"... {total - MAX_ROWS} more not shown (first {MAX_ROWS} of {total}). Filter with --name/--tag "
            "or --latest, or use .to_dataframe().")


def model_versions_html(versions: Sequence[ModelVersion]) -> str:
    """An HTML table of versions, with a count; at most ``MAX_ROWS`` rows."""
    count = f"<p>{len(versions)} model version{'s' if len(versions) != 1 else ''}</p>"
    more = f"<p><em>{escape(_more(len(versions)))}</em></p>" if len(versions) > MAX_ROWS else ""
    return count + table([version_row(v) for v in versions[:MAX_ROWS]]) + more


def model_versions_text(versions: Sequence[ModelVersion]) -> str:
    """A fixed-width text table of versions; at most ``MAX_ROWS`` rows."""
    if not versions:
        return "No model versions."
    if len(versions) > MAX_ROWS:
        return model_versions_text(versions[:MAX_ROWS]) + "\n" + _more(len(versions))
    rows = [version_row(v) for v in versions]
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
        ("trust", _trust_html(v)),
    ]
    if v.signature:
        fields.append(("signature", _json_block(dict(v.signature))))
    lineage = v.lineage.as_dict()
    if lineage:
        fields.append(("lineage", _json_block(lineage)))
    body = "".join(
        f'<tr><th style="{_CELL}">{name}</th><td style="{_CELL}">{value}</td></tr>' for name, value in fields
    )
    return (
        f"<div><strong>{escape(v.name)}</strong> version <strong>{v.version}</strong>"
        f'<table style="{_TABLE_STYLE}">{body}</table></div>'
    )


def _trust_html(v: ModelVersion) -> str:
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
    body = "".join(f'<tr><th style="{_CELL}">{k}</th><td style="{_CELL}">{v}</td></tr>' for k, v in rows)
    return f'<div><strong>{escape(d.name)}</strong><table style="{_TABLE_STYLE}">{body}</table></div>'


def bar_chart_png(title: str, groups: Sequence[str], series: dict[str, Sequence[float]], unit: str,
                  log: bool = False) -> str | None:
    """A small grouped bar chart as a base64 PNG (None when matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(5.5, 2.6), dpi=90)
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        axes.bar([g + i * width for g in range(len(groups))], values, width, label=name)
    axes.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    axes.set_ylabel(unit)
    axes.set_title(title, fontsize=10)
    if log:
        axes.set_yscale("log")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure_png(figure)


def figure_png(figure: Any) -> str:
    """A matplotlib figure as a base64 PNG; the figure is closed."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


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
    body = "".join(f'<tr><th style="{_CELL}">{k}</th><td style="{_CELL}">{v}</td></tr>' for k, v in rows)
    return f'<div><strong>{escape(image.tag)}</strong><table style="{_TABLE_STYLE}">{body}</table></div>'


def deployments_html(items: Sequence[Deployment]) -> str:
    """An HTML table of deployments."""
    if not items:
        return "<p><em>No deployments.</em></p>"
    rows = [{"name": d.name, "model": f"{d.model_name}:{d.model_version}", "target": d.target, "state": d.state,
             "url": d.url or "", "updated": when(d.updated_at)} for d in items]
    return table(rows)
