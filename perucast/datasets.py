"""Reading data sets back: one raw table or the feature dataset as pandas, and the oracle's MASE.

Used by the demo, the generator calibration tests, training and evaluation, so every step reads
the feature dataset one way and every figure of "how close to the best possible forecast" is
computed one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from models import get_use_case
from models.base import FeatureSpec
from perucast.io import table_file
from perucast.metrics import mase


def read_table(directory: Path | str, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read ``table`` from ``directory`` (``<table>.parquet`` or ``<table>.csv``) as pandas.

    Raises:
        FileNotFoundError: when the directory holds neither file.
    """
    path = table_file(directory, table)
    if path is None:
        raise FileNotFoundError(f"no {table}.parquet or {table}.csv in {directory}")
    if path.suffix == ".parquet":
        return pq.read_table(path, columns=columns).to_pandas()
    frame = pacsv.read_csv(path).to_pandas()
    return frame[columns] if columns is not None else frame


SPLIT = "split"  # the hive partition column of the feature dataset


def read_features(
    features_dir: Path | str,
    spec: FeatureSpec,
    columns: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of the feature dataset (some or all columns, some or all splits) with ``split``.

    The time column comes back as ``datetime64[ns]`` and the series keys as strings.

    Raises:
        FileNotFoundError: when ``features/`` is missing, or a requested split has no rows.
    """
    import pyarrow.dataset as pads

    root = Path(features_dir) / "features"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist: not a preprocessed feature dataset")
    dataset = pads.dataset(root, format="parquet", partitioning="hive")
    flt = None if splits is None else pads.field(SPLIT).isin(list(splits))
    wanted = None if columns is None else [*columns, SPLIT]
    frame = dataset.to_table(columns=wanted, filter=flt).to_pandas()
    frame[spec.time_column] = pd.to_datetime(frame[spec.time_column]).astype("datetime64[ns]")
    for key in spec.series_keys:
        frame[key] = frame[key].astype(str)
    frame[SPLIT] = frame[SPLIT].astype(str)
    missing = sorted(set(splits or ()) - set(frame[SPLIT]))
    if missing:
        raise FileNotFoundError(f"no rows of split(s) {missing} in {root}")
    return frame


def oracle_mase(directory: Path | str, use_case_name: str, years: int = 2) -> float:
    """Mean MASE of the oracle over the last ``years`` years of each series.

    The oracle is the noise-free expected target the generator drew the observations from, so
    this is the best MASE any model can hope for on the data set (against seasonal naive).
    """
    uc = get_use_case(use_case_name)
    t = uc.target
    keys = [t.time_column, *t.series_keys]
    observed = read_table(directory, t.table, [*keys, t.column])
    oracle = read_table(directory, uc.oracle.name, [*keys, t.oracle_column])
    df = observed.merge(oracle, on=keys).sort_values(t.time_column)
    df[t.time_column] = pd.to_datetime(df[t.time_column])
    cutoff = df[t.time_column].max() - pd.DateOffset(years=years)
    scores = []
    for _, series in df.groupby(list(t.series_keys)):
        test = series[t.time_column] > cutoff
        scores.append(
            mase(
                series.loc[test, t.column].to_numpy(),
                series.loc[test, t.oracle_column].to_numpy(),
                series.loc[~test, t.column].to_numpy(),
                t.season_length,
            )
        )
    return float(np.nanmean(scores))
