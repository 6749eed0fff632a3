"""``seektune studio``: the local web app over a runs directory (seektune/studio/app.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from seektune.cli.common import _fail, _guard


def studio_command(
    runs_dir: Annotated[Path, typer.Option(help="The runs directory the studio lists and writes new runs to "
                                           "(created if missing).")] = Path("runs"),
    data: Annotated[list[Path] | None, typer.Option("--data", help="A data file or directory the studio may "
                                                    "read (repeatable); its recipes are offered as examples, e.g. "
                                                    "--data examples. Uploads are always allowed.",
                                                    show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface: set a key).")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8020,
    api_key: Annotated[str | None, typer.Option(envvar="SEEKTUNE_STUDIO_KEY", help="Require `Authorization: "
                                                "Bearer KEY` on the API (the page asks for it).")] = None,
    max_jobs: Annotated[int, typer.Option(help="Jobs run at once (1 on a CPU machine: a training run uses every "
                                          "core; more on a machine with several GPUs). The rest wait in order.",
                                          min=1)] = 1,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
) -> None:
    """A local web app: write a recipe (a form from the recipe schema, or YAML), launch and watch runs, read
    reports, chat with a run, compare runs, export. Every job is the `seektune` command the page shows."""
    logging.basicConfig(level=logging.INFO, format="seektune: %(message)s")
    if runs_dir.exists() and not runs_dir.is_dir():
        _fail(f"--runs-dir {runs_dir} is a file; name a directory (created if missing)")
    for path in data or []:
        if not path.exists():
            _fail(f"--data {path}: no such file or directory")
    from seektune.studio.app import serve_studio

    _guard(lambda: serve_studio(runs_dir, list(data or []), host=host, port=port, token=api_key, max_jobs=max_jobs,
                                open_browser=open_browser))
