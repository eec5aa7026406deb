"""The use-case interface: what every perucast use case implements.

A use case (``crop_demand``, ``fish_stock``) owns everything specific to its domain: the raw
table schemas, the synthetic data generator, and (in later issues) the Spark feature transform,
the Keras network, the serving signature, baselines and domain post-processing. Steps and
pipelines in ``components/`` and ``pipelines/`` only talk to this interface, so adding a third
use case touches nothing else.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from models.network import NetworkSpec

# Logical column types and the Arrow type each one is stored as.
DType = Literal["string", "int32", "int64", "float64", "date", "bool"]

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "date": pa.date32(),
    "bool": pa.bool_(),
}


@dataclass(frozen=True)
class Column:
    """One column of a raw table.

    Attributes:
        name: Column name as it appears in the file.
        dtype: Logical type (see ``ARROW_TYPES``).
        unit: Physical unit, e.g. ``"t"``, ``"°C"``, ``"PEN/kg"``; empty for keys and labels.
        description: One line for people.
        min: Smallest allowed value (inclusive), for numeric and date columns.
        max: Largest allowed value (inclusive).
        allowed: Closed vocabulary for categorical string columns.
        max_null_share: Largest share of null or NaN values the column may hold.
    """

    name: str
    dtype: DType
    unit: str = ""
    description: str = ""
    min: float | str | None = None
    max: float | str | None = None
    allowed: tuple[str, ...] | None = None
    max_null_share: float = 0.0

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.dtype]

    @property
    def is_numeric(self) -> bool:
        return self.dtype in ("int32", "int64", "float64")

    def range_text(self) -> str:
        """The allowed values, written for people."""
        if self.allowed is not None:
            shown = ", ".join(self.allowed[:6])
            more = f", … ({len(self.allowed)} values)" if len(self.allowed) > 6 else ""
            return f"{{{shown}{more}}}"
        if self.min is None and self.max is None:
            return ""
        low = "-inf" if self.min is None else _fmt(self.min)
        high = "inf" if self.max is None else _fmt(self.max)
        return f"[{low}, {high}]"


def _fmt(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class TableSchema:
    """The schema of one raw table.

    Attributes:
        name: Table name; the file is ``<name>.parquet`` or ``<name>.csv``.
        description: What one row is.
        columns: The columns, in file order.
        keys: Columns that identify a row (unique together).
        time_column: The column that orders a series in time, if any.
        frequency: Expected spacing of ``time_column`` within a series, as a pandas offset alias
            (``"W-MON"``, ``"MS"``, ``"D"``), ``"inferred"`` when the cadence depends on the
            generator scale, or ``None`` for irregular tables (surveys). Gaps against it are
            reported by validation.
        series_keys: The key columns (other than time) that identify one series, for gap checks.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...]
    time_column: str | None = None
    frequency: str | None = None
    series_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name!r}: duplicate column names in {names}")
        for key in (*self.keys, *self.series_keys):
            if key not in names:
                raise ValueError(f"table {self.name!r}: key {key!r} is not a column")
        if self.time_column is not None and self.time_column not in names:
            raise ValueError(
                f"table {self.name!r}: time column {self.time_column!r} is not a column"
            )

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema files of this table are written and read with."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.max_null_share > 0) for c in self.columns]
        )


class Scale(enum.StrEnum):
    """How much synthetic data to generate."""

    TINY = "tiny"  # tests: seconds
    SMALL = "small"  # demo: under a minute
    FULL = "full"  # DOMAIN.md scale: tens of millions of satellite rows


class FileFormat(enum.StrEnum):
    PARQUET = "parquet"
    CSV = "csv"


class GeneratorConfig(BaseModel):
    """Configuration of a synthetic data generator (one per run, validated up front)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=42, ge=0, description="Random seed; same seed, same bytes.")
    scale: Scale = Scale.SMALL
    format: FileFormat = FileFormat.PARQUET


@dataclass(frozen=True)
class TargetSpec:
    """What the use case forecasts, for metrics and for the oracle table.

    Attributes:
        table: The raw table holding the observed target.
        column: The observed target column (in ``table`` and in the oracle table).
        time_column: The time column shared by ``table`` and the oracle table.
        series_keys: Columns identifying one forecast series.
        season_length: Periods per year (52 weekly, 12 monthly): the seasonal-naive lag.
        oracle_column: The noise-free expected target in the oracle table.
    """

    table: str
    column: str
    time_column: str
    series_keys: tuple[str, ...]
    season_length: int
    oracle_column: str = "expected"


@dataclass(frozen=True)
class FeatureSpec:
    """The columns of a use case's feature dataset (the output of its Spark transform).

    One row is one forecast origin: a series (``series_keys``) at time ``time_column``. Every
    feature uses data up to and including that time only; ``target_h1`` .. ``target_h{H}`` are
    the target ``h`` periods later.

    Attributes:
        time_column: The origin's time (Monday of the week, first day of the month).
        series_keys: Columns identifying one series (categorical inputs of the network too).
        period: Spacing of origins as a pandas offset alias (``"W-MON"``, ``"MS"``).
        horizon: H, the number of periods ahead forecast.
        target: The raw target column (also a feature: its value at the origin).
        categorical: Categorical feature columns (strings or small integer codes).
        numeric: Numeric feature columns (float).
    """

    time_column: str
    series_keys: tuple[str, ...]
    period: str
    horizon: int
    target: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]

    @property
    def target_columns(self) -> list[str]:
        return [f"target_h{h}" for h in range(1, self.horizon + 1)]

    @property
    def feature_columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    @property
    def columns(self) -> list[str]:
        """Every column of the dataset, in order (the split column is added by the step)."""
        keys = [k for k in self.series_keys if k not in self.categorical]
        return [self.time_column, *keys, *self.feature_columns, *self.target_columns]


@dataclass
class FeatureResult:
    """What a use case's feature transform returns.

    Attributes:
        frame: The feature DataFrame (columns of ``spec.columns``); rows with incomplete history
            or future may hold nulls, the preprocess step decides what to keep.
        spec: Its columns.
        counts: Named counts for the step's report (e.g. weeks filled by the fill rule).
    """

    frame: DataFrame
    spec: FeatureSpec
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class GenerationResult:
    """What a generator wrote."""

    use_case: str
    out_dir: Path
    files: dict[str, Path]
    rows: dict[str, int]
    config: GeneratorConfig
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


class UseCase(abc.ABC):
    """The interface every use case implements.

    Later issues extend it with the feature transform, the network, the serving signature,
    baselines and post-processing; keep it small.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    tables: ClassVar[tuple[TableSchema, ...]]
    oracle: ClassVar[TableSchema]
    target: ClassVar[TargetSpec]
    # Serving inputs holding the observed target at the origin, origin − 1, origin − 2 (in
    # that order): realized accuracy (``perucast.realized``) finds a logged request's origin by
    # matching them against the target table's history.
    target_history_inputs: ClassVar[tuple[str, ...]]
    # Serving inputs that are functions of the calendar alone (fnmatch patterns): a window of
    # a few weeks always differs from years of training in them, by construction, so drift
    # monitoring (``perucast.drift``) reports them as calendar inputs instead of testing them.
    calendar_inputs: ClassVar[tuple[str, ...]] = ()
    # Serving inputs with one value per period for every series (fnmatch patterns): the Niño
    # index, the exchange rate. A window holds only a few distinct values of them, so drift
    # tests them per period (their distinct values), not per instance.
    period_inputs: ClassVar[tuple[str, ...]] = ()

    def table(self, name: str) -> TableSchema:
        """The schema of one raw table (or of ``oracle``)."""
        for schema in (*self.tables, self.oracle):
            if schema.name == name:
                return schema
        known = ", ".join(s.name for s in self.tables)
        raise KeyError(f"use case {self.name!r} has no table {name!r} (tables: {known})")

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]

    def generate(self, config: GeneratorConfig, out_dir: Path | str) -> GenerationResult:
        """Write the raw tables, the oracle table and ``manifest.json`` to ``out_dir``.

        Deterministic: the same config writes the same data. The directory appears complete or
        not at all (it is written beside ``out_dir`` and renamed at the end).
        """
        import time

        from perucast.io import atomic_directory, write_json_atomic

        started = time.perf_counter()
        out_dir = Path(out_dir)
        with atomic_directory(out_dir) as tmp:
            rows = self.write_synthetic(config, tmp)
            missing = {*self.table_names, self.oracle.name} - set(rows)
            if missing:
                raise RuntimeError(f"{self.name} generator did not write {sorted(missing)}")
            seconds = time.perf_counter() - started
            files = {name: f"{name}.{config.format.value}" for name in rows}
            write_json_atomic(
                tmp / "manifest.json",
                {
                    "use_case": self.name,
                    "generator": {"seed": config.seed, "scale": config.scale.value},
                    "format": config.format.value,
                    "files": files,
                    "rows": rows,
                    "seconds": round(seconds, 3),
                },
            )
        return GenerationResult(
            use_case=self.name,
            out_dir=out_dir,
            files={name: out_dir / f for name, f in files.items()},
            rows=rows,
            config=config,
            seconds=seconds,
        )

    # Forecast horizon (periods) when the caller does not set one.
    default_horizon: ClassVar[int]

    @abc.abstractmethod
    def feature_spec(self, horizon: int) -> FeatureSpec:
        """The columns of the feature dataset for ``horizon`` periods ahead."""

    @abc.abstractmethod
    def build_features(self, tables: Mapping[str, DataFrame], horizon: int) -> FeatureResult:
        """The Spark feature transform: validated raw tables in, one row per origin out.

        Built-in Spark functions and window functions only (no Python UDFs), and no leakage: a
        feature at time t uses data up to t only.

        Args:
            tables: Spark DataFrames of the raw tables, by table name (the oracle is not passed).
            horizon: H, the number of target columns.
        """

    @abc.abstractmethod
    def network_spec(self) -> NetworkSpec:
        """How the feature columns enter the shared forecasting network (``models.network``)."""

    @abc.abstractmethod
    def write_synthetic(self, config: GeneratorConfig, directory: Path) -> dict[str, int]:
        """Write every raw table and the oracle table into ``directory``.

        Use ``perucast.io.TableWriter`` (chunked, cast to the schema) and
        ``perucast.progress.progress`` for large tables.

        Returns:
            Rows written per table name (raw tables and ``oracle``).
        """
