from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.cli.common import EXIT_INVALID_INPUT, err, job_options, load, show_rejections
from shared.contracts.settings import get_settings


def validate(
    input: Annotated[Path, typer.Argument(help="Job JSON, items JSONL or OpenAI Batch JSONL.", exists=True,
                                          dir_okay=False)],
    model: Annotated[str | None, typer.Option(help="Map every OpenAI line to this model.")] = None,
    template: Annotated[Path | None, typer.Option(help="Jinja2 template file over item fields.")] = None,
    schema: Annotated[Path | None, typer.Option(help="JSON schema file for structured output.")] = None,
) -> None:
    settings = get_settings()
    if model:
        settings = settings.model_copy(update={"model_name": model})
    opts = job_options(job_id=None, template=template, system=None, schema=schema, json_object=False,
                       max_tokens=None, temperature=None, top_p=None, seed=None, chunk_size=None,
                       chunk_interval=None)
    job = load(input, settings, opts, any_model=bool(model), strict=False)
    show_rejections(job)
    err.print(f"[bold]{input}[/]: {len(job.items)} valid item(s), {len(job.rejected)} rejected; "
              f"results default to the {job.result_format} format")
    if job.rejected:
        raise typer.Exit(EXIT_INVALID_INPUT)
