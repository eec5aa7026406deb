"""Generate step: write a seeded synthetic raw data set of one use case.

The synthetic source of the pipelines and the first stage of ``dvc.yaml``::

    python -m components.generate --use-case fish_stock --scale small --seed 42 \
        --out data/raw/fish_stock
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict

from models import USE_CASE_NAMES, UseCaseName, get_use_case
from models.base import FileFormat, GenerationResult, GeneratorConfig, Scale

log = logging.getLogger(__name__)


class GenerateConfig(BaseModel):
    """Configuration of the generate step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    output_dir: Path
    seed: int = 42
    scale: Scale = Scale.SMALL
    format: FileFormat = FileFormat.PARQUET


def generate(config: GenerateConfig) -> GenerationResult:
    """Write the raw tables, the oracle table and manifest.json to ``config.output_dir``."""
    use_case = get_use_case(config.use_case)
    log.info(
        "generating %s (scale=%s, seed=%d, format=%s) into %s",
        use_case.name,
        config.scale.value,
        config.seed,
        config.format.value,
        config.output_dir,
    )
    result = use_case.generate(
        GeneratorConfig(seed=config.seed, scale=config.scale, format=config.format),
        config.output_dir,
    )
    log.info("wrote %d rows in %.1fs: %s", result.total_rows, result.seconds, result.rows)
    return result


def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    out: Annotated[Path, typer.Option(help="Output directory (replaced atomically).")],
    scale: Annotated[Scale, typer.Option(help="tiny (tests), small (demo), full.")] = Scale.SMALL,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 42,
    fmt: Annotated[FileFormat, typer.Option("--format", help="File format.")] = FileFormat.PARQUET,
) -> None:
    """Generate a seeded synthetic raw data set (plus its oracle table) for a use case."""
    from perucast.logs import setup_logging

    setup_logging()
    try:
        config = GenerateConfig(
            use_case=use_case, output_dir=out, seed=seed, scale=scale, format=fmt
        )
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--use-case") from None
    result = generate(config)
    typer.echo(f"{result.use_case}: {result.total_rows:,} rows in {result.seconds:.1f}s -> {out}")
    for table, rows in result.rows.items():
        typer.echo(f"  {table:<18} {rows:>12,} rows")


app = typer.Typer(add_completion=False, help=__doc__)
app.command()(cli)

if __name__ == "__main__":
    app()
