"""The one Jinja2 environment that renders every HTML page seektune writes, and inline figures for them.

    render("card.html.j2", card=...)     # data/card.html; report.html, compare.html, sheet-rN.html likewise

The templates are in ``seektune/templates/`` (shipped as package data, see pyproject.toml) and all
extend ``base.html.j2``. Autoescaping is on for every template, so text from users, data files
and model output is escaped by Jinja2 and nowhere by hand. No page marks anything safe: plots
are inline PNG ``data:`` URIs, which are attribute values escaped like any other text, and the
report's win-rate chart is SVG drawn by its template from numbers. Undefined names are errors,
so a misspelt field fails a test instead of vanishing from a page.

This module sits in ``data/`` because the data card is the lowest page; ``evaluate/`` imports it.
"""

from __future__ import annotations

import base64
import io
from functools import cache

import jinja2


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("seektune", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context) -> str:
    """``template`` (a name under ``seektune/templates/``) rendered with ``context``, escaped."""
    return environment().get_template(template).render(**context)


def pyplot():
    """matplotlib's pyplot on the Agg backend: no display on training boxes, and tests stay headless."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_data_uri(figure, dpi: int) -> str:
    """``figure`` as an inline PNG (``data:image/png;base64,...``), so a page needs no other file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
