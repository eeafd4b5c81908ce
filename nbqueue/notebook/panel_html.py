"""The panel's static forms: plain text (terminals, text-only frontends) and the HTML
snapshot a saved notebook shows without its kernel. Pure functions of the panel's last
``data`` (``Dashboard.data``); nothing here reads Redis."""

from __future__ import annotations

import html
from typing import Any

from ..ops.panel import PANEL_STATES as STATES


def panel_text(data: dict[str, Any]) -> str:
    """The panel as plain text (terminals and text-only frontends)."""
    lines = [f"nbqueue dashboard ({data.get('refreshed', '-')})"]
    for row in data.get("queues", []):
        c = row["counts"]
        rate = "-" if row["rate"] is None else f"{row['rate']:.2f} jobs/s"
        lines.append(f"  {row['name']}{' [paused]' if row['paused'] else ''}: "
                     + ", ".join(f"{s} {c[s]}" for s in STATES) + f"; {rate}")
    for w in data.get("workers", []):
        lines.append(f"  worker {w['queue']}: {w['mode']} x{w['concurrency']} "
                     f"{w['state']} ({w['host']})")
    return "\n".join(lines)


def snapshot_html(data: dict[str, Any], panel_id: str, live: bool) -> str:
    """The panel's last state as static HTML (what a saved notebook shows without its
    kernel, and what frontends without widget support show)."""
    e = html.escape
    head = ("<tr>" + "".join(f"<th style='text-align:{a};padding:2px 8px'>{e(t)}</th>"
                             for t, a in (("queue", "left"), ("waiting", "right"),
                                          ("active", "right"), ("delayed", "right"),
                                          ("completed", "right"), ("failed", "right"),
                                          ("jobs/s", "right"))) + "</tr>")
    body = []
    for row in data.get("queues", []):
        c = row["counts"]
        rate = "-" if row["rate"] is None else f"{row['rate']:.2f}"
        paused = " <b style='color:#8a6d00'>(paused)</b>" if row["paused"] else ""
        body.append("<tr><td style='text-align:left;padding:2px 8px'>" + e(row["name"])
                    + paused + "</td>"
                    + "".join(f"<td style='text-align:right;padding:2px 8px'>{c[s]}</td>"
                              for s in STATES)
                    + f"<td style='text-align:right;padding:2px 8px'>{rate}</td></tr>")
    workers = ", ".join(f"{e(w['queue'])} ({e(w['mode'])} x{w['concurrency']}, "
                        f"{e(w['state'])})" for w in data.get("workers", []))
    # While the live view shows, it hides this snapshot: JupyterLab and Notebook 7 through
    # this CSS (the output after a live panel), other frontends through the view's JS.
    # Without a live view the CSS hides the widget output's "model not found" instead.
    style = ("<style>.jp-OutputArea-child:has(.nbq-live) + .jp-OutputArea-child"
             ":has(.nbqueue-snapshot){display:none}"
             ".jp-OutputArea-child:not(:has(.nbq-live)):has(+ .jp-OutputArea-child "
             ".nbqueue-snapshot) .jupyter-widgets{display:none}</style>")
    return (f"{style}<div class='nbqueue-snapshot' data-nbq-panel='{e(panel_id)}'>"
            "<div><b>nbqueue</b> dashboard as of "
            f"{e(str(data.get('refreshed', '-')))}"
            f"{'' if live else ' (refresh stopped)'}: a static copy; run the cell "
            f"for the live panel</div><table>{head}{''.join(body)}</table>"
            f"<div style='font-size:90%'>workers: {workers or 'none started here'}</div>"
            "</div>")
