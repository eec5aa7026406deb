"""One way to get a SparkSession, on a laptop (``local[*]``) or on Kubernetes (``k8s://``).

The preprocess step, the tests and the benchmarks all build their session here, so the tuning
that matters (Arrow, adaptive execution, shuffle partitions sized to the data, no UI in tests)
is set once. On Kubernetes the same settings are passed through ``spark-submit --conf`` or a
SparkApplication's ``sparkConf``; :func:`submit_args` renders them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from perucast.io import table_file

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from models.base import TableSchema


class SparkConfig(BaseModel):
    """Where and how Spark runs.

    Attributes:
        master: ``local[*]`` (default), ``local[N]``, ``spark://...`` or ``k8s://https://...``.
        app_name: Shown in the Spark UI and in pod names on Kubernetes.
        driver_memory: JVM heap of the driver (``spark.driver.memory``); in local mode the
            executors live in the driver, so this bounds the whole job.
        shuffle_partitions: ``spark.sql.shuffle.partitions``; None sizes it from the cores
            (adaptive execution coalesces small partitions further).
        k8s_image: Container image of the executors (Kubernetes only; pinned tag).
        k8s_namespace: Namespace of the driver and executor pods.
        k8s_service_account: Service account of the driver (it creates the executor pods).
        executor_instances: Executor pods (Kubernetes) or None.
        executor_memory: Heap of each executor (Kubernetes).
        executor_cores: Cores of each executor (Kubernetes).
        ui: Start the Spark UI (off in tests and batch pods).
        conf: Any further Spark settings, passed through as is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    master: str = "local[*]"
    app_name: str = "perucast"
    driver_memory: str = "2g"
    shuffle_partitions: int | None = Field(default=None, ge=1)
    k8s_image: str | None = None
    k8s_namespace: str = "perucast"
    k8s_service_account: str = "perucast-spark"
    executor_instances: int | None = Field(default=None, ge=1)
    executor_memory: str = "4g"
    executor_cores: int = Field(default=2, ge=1)
    ui: bool = False
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("master")
    @classmethod
    def _known_master(cls, value: str) -> str:
        if not value.startswith(("local", "spark://", "k8s://", "yarn")):
            raise ValueError(
                f"unsupported Spark master {value!r}: use local[*], local[N], spark://host:port "
                "or k8s://https://<api-server>"
            )
        return value

    @field_validator("k8s_image")
    @classmethod
    def _pinned_image(cls, value: str | None) -> str | None:
        if value is not None and (":" not in value.rsplit("/", 1)[-1] or value.endswith(":latest")):
            raise ValueError(f"container image {value!r} must be pinned to a tag other than latest")
        return value

    @property
    def on_kubernetes(self) -> bool:
        return self.master.startswith("k8s://")

    def settings(self) -> dict[str, str]:
        """Every Spark setting this config implies (what goes into ``--conf``)."""
        cores = os.cpu_count() or 2
        partitions = self.shuffle_partitions or max(4, 2 * cores)
        out = {
            "spark.driver.memory": self.driver_memory,
            # Arrow for toPandas/createDataFrame; no Python UDFs are used in the hot path.
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.adaptive.enabled": "true",
            "spark.sql.adaptive.coalescePartitions.enabled": "true",
            "spark.sql.shuffle.partitions": str(partitions),
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.parquet.compression.codec": "zstd",
            "spark.ui.enabled": str(self.ui).lower(),
            "spark.ui.showConsoleProgress": "false",
        }
        if self.on_kubernetes:
            if self.k8s_image is None:
                raise ValueError("a k8s:// master needs k8s_image (the perucast image, pinned)")
            out.update(
                {
                    "spark.kubernetes.container.image": self.k8s_image,
                    "spark.kubernetes.namespace": self.k8s_namespace,
                    "spark.kubernetes.authenticate.driver.serviceAccountName": (
                        self.k8s_service_account
                    ),
                    "spark.executor.instances": str(self.executor_instances or 2),
                    "spark.executor.memory": self.executor_memory,
                    "spark.executor.cores": str(self.executor_cores),
                }
            )
        elif self.executor_instances is not None:
            out["spark.executor.instances"] = str(self.executor_instances)
        out.update(self.conf)
        return out

    def submit_args(self, script: str, *script_args: str) -> list[str]:
        """The ``spark-submit`` command line that runs ``script`` with these settings."""
        cmd = ["spark-submit", "--master", self.master, "--name", self.app_name]
        if self.on_kubernetes:
            cmd += ["--deploy-mode", "cluster"]
        for key, value in self.settings().items():
            cmd += ["--conf", f"{key}={value}"]
        return [*cmd, script, *script_args]


def get_spark(config: SparkConfig | None = None) -> SparkSession:
    """Build (or return the running) SparkSession for ``config``.

    Under ``spark-submit`` (or the Spark Operator) its own ``--conf`` values win over ours.

    When a session already runs in this process (a test's session-scoped fixture), it is reused;
    its static settings such as driver memory cannot change any more, the SQL settings are
    applied to it.
    """
    from pyspark.sql import SparkSession

    config = config or SparkConfig()
    active = SparkSession.getActiveSession()
    settings = config.settings()
    if active is not None:
        for key, value in settings.items():
            if key.startswith("spark.sql."):
                active.conf.set(key, value)
        return active
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Launched by spark-submit (or the Spark Operator): master, image and resources come
        # from its command line; only the SQL settings are ours to set.
        session = SparkSession.builder.getOrCreate()
        submitted = session.sparkContext.getConf()
        for key, value in settings.items():
            if key.startswith("spark.sql.") and not submitted.contains(key):
                session.conf.set(key, value)
        return session
    if config.master.startswith("local"):
        # Bind the driver to loopback: nothing here needs another host, and it silences
        # Spark's "hostname resolves to a loopback address" warning.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(config.master).appName(config.app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


class TableInputError(ValueError):
    """A raw table the transform needs is empty or does not match its schema."""


class TableMissingError(TableInputError):
    """A raw table the transform needs is not in the input directory."""


def require_tables(tables: Mapping[str, object], names: Sequence[str], who: str) -> None:
    """Raise ``TableMissingError`` naming what ``who`` needs when a table is not in ``tables``."""
    missing = [name for name in names if name not in tables]
    if missing:
        raise TableMissingError(
            f"{who} needs tables {list(names)}; missing {missing} (got {sorted(tables)})"
        )


def read_tables(
    spark: SparkSession, schemas: list[TableSchema], directory: Path | str
) -> dict[str, DataFrame]:
    """Read the raw tables named by ``schemas`` from ``directory`` as Spark DataFrames.

    Parquet (what validation writes) or CSV (read with the schema, never inferred).

    Raises:
        TableInputError: naming the table (and column) when a table is missing, a column is
            missing or of another type, or a table is empty.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    directory = Path(directory)
    frames: dict[str, DataFrame] = {}
    for schema in schemas:
        path = table_file(directory, schema.name)
        if path is None:
            raise TableMissingError(
                f"table {schema.name!r} is missing: no {schema.name}.parquet or "
                f"{schema.name}.csv in {directory}"
            )
        # The Spark types follow from the schema's Arrow types (models.base.ARROW_TYPES).
        expected = from_arrow_schema(schema.arrow_schema())
        if path.suffix == ".csv":
            frame = spark.read.csv(str(path), header=True, schema=expected, mode="FAILFAST")
        else:
            frame = spark.read.parquet(str(path))
        actual = {f.name: f.dataType for f in frame.schema.fields}
        for column in expected.fields:
            if column.name not in actual:
                raise TableInputError(
                    f"table {schema.name!r}: column {column.name!r} is missing "
                    f"(found {sorted(actual)})"
                )
            if actual[column.name] != column.dataType:
                raise TableInputError(
                    f"table {schema.name!r}: column {column.name!r} is "
                    f"{actual[column.name].simpleString()}, "
                    f"expected {column.dataType.simpleString()}"
                )
        frame = frame.select(*schema.column_names)
        if frame.isEmpty():
            raise TableInputError(f"table {schema.name!r} is empty ({path})")
        frames[schema.name] = frame
    return frames
