"""Plots people would rather see than read (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here or in pods
    import matplotlib.pyplot as plt

    return plt


def biomass_vs_nino(stock: pd.DataFrame, path: Path, oracle: pd.DataFrame | None = None) -> Path:
    """Total anchoveta biomass and landings against the Niño 1+2 anomaly, El Niño shaded.

    With ``oracle`` (month, zone, expected) the true biomass is drawn under the assessed one.
    """
    plt = _pyplot()
    monthly = (
        stock.groupby("month")
        .agg(
            biomass=("biomass_tonnes", "sum"),
            catch=("catch_tonnes", "sum"),
            nino=("nino12_anomaly_c", "first"),
        )
        .sort_index()
    )
    months = pd.to_datetime(monthly.index)
    fig, (ax, ax_nino) = plt.subplots(
        2, 1, figsize=(12, 6.5), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}
    )
    ax.plot(months, monthly["biomass"] / 1e6, color="tab:blue", lw=0.8, alpha=0.6, label="assessed")
    if oracle is not None:
        true = oracle.groupby("month")["expected"].sum().sort_index()
        ax.plot(
            pd.to_datetime(true.index), true / 1e6, color="black", lw=1.3, label="true (oracle)"
        )
    ax.bar(
        months,
        monthly["catch"] / 1e6,
        width=25,
        color="tab:orange",
        alpha=0.7,
        label="monthly landings",
    )
    ax.set_ylabel("million tonnes")
    ax.set_title("Anchoveta biomass (3 zones, assessed and true) and landings vs Niño 1+2")
    ax.legend(loc="upper left")
    warm = monthly["nino"].to_numpy() >= 1.0
    for axis in (ax, ax_nino):
        axis.fill_between(
            months,
            0,
            1,
            where=warm,
            transform=axis.get_xaxis_transform(),
            color="tab:red",
            alpha=0.12,
            lw=0,
        )
    ax_nino.plot(months, monthly["nino"], color="tab:red", lw=0.9)
    ax_nino.axhline(0, color="grey", lw=0.6)
    ax_nino.set_ylabel("Niño 1+2 anomaly (°C)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def demand_by_region(demand: pd.DataFrame, path: Path) -> Path:
    """Share of national demand by region (all crops), largest first."""
    plt = _pyplot()
    totals = demand.groupby("region")["demand_tonnes"].sum().sort_values()
    share = 100 * totals / totals.sum()
    fig, ax = plt.subplots(figsize=(8, 8))
    colors = ["tab:red" if r == "lima" else "tab:blue" for r in share.index]
    ax.barh(share.index, share.to_numpy(), color=colors)
    for y, value in enumerate(share.to_numpy()):
        ax.text(value + 0.3, y, f"{value:.1f}%", va="center", fontsize=8)
    ax.set_xlabel("% of national demand (all crops)")
    ax.set_title("Crop demand by region")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def crop_seasonality(demand: pd.DataFrame, prices: pd.DataFrame, path: Path) -> Path:
    """National supply, demand and mean price by month of year, per crop (relative to mean)."""
    plt = _pyplot()
    df = demand.merge(prices, on=["week_start", "region", "crop"])
    df["month"] = pd.to_datetime(df["week_start"]).dt.month
    national = df.groupby(["crop", "month"]).agg(
        demand=("demand_tonnes", "sum"),
        supply=("supply_tonnes", "sum"),
        price=("price_pen_per_kg", "mean"),
    )
    crops = sorted(national.index.get_level_values("crop").unique())
    cols = 4
    rows = int(np.ceil(len(crops) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(14, 2.6 * rows), sharex=True, squeeze=False)
    for ax, crop in zip(axes.flat, crops, strict=False):
        sub = national.loc[crop]
        for column, color in (
            ("supply", "tab:green"),
            ("demand", "tab:blue"),
            ("price", "tab:red"),
        ):
            ax.plot(sub.index, sub[column] / sub[column].mean(), color=color, label=column)
        ax.set_title(crop, fontsize=10)
        ax.axhline(1, color="grey", lw=0.5)
    for ax in list(axes.flat)[len(crops) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Seasonality by month (national; 1 = the crop's mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def chlorophyll_map(satellite: pd.DataFrame, path: Path) -> Path:
    """Mean chlorophyll-a per grid cell: the coastal upwelling cells stand out."""
    plt = _pyplot()
    cells = satellite.groupby(["lon", "lat"], as_index=False)["chlorophyll_mg_m3"].mean()
    fig, ax = plt.subplots(figsize=(6, 8))
    points = ax.scatter(
        cells["lon"],
        cells["lat"],
        c=np.log10(cells["chlorophyll_mg_m3"]),
        cmap="viridis",
        s=12,
        marker="s",
    )
    fig.colorbar(points, ax=ax, label="log10 chlorophyll-a (mg/m³)")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title("Mean chlorophyll-a off Peru")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def forecast_fan(
    history: pd.DataFrame,
    forecast: pd.DataFrame,
    series_keys: list[str],
    time_column: str,
    target: str,
    path: Path,
    title: str,
    unit: float = 1.0,
    unit_label: str = "",
) -> Path:
    """One panel per series: the actuals around the origin and the P10–P90 band and P50 ahead.

    Args:
        history: Rows of ``time_column``, the keys and ``target``.
        forecast: The long forecast frame (keys, ``target_time``, p10, p50, p90).
    """
    plt = _pyplot()
    groups = list(forecast.groupby(series_keys, sort=False))
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 2.6 * len(groups)), squeeze=False)
    for ax, (key, fc) in zip(axes[:, 0], groups, strict=True):
        key = key if isinstance(key, tuple) else (key,)
        mask = np.ones(len(history), dtype=bool)
        for column, value in zip(series_keys, key, strict=True):
            mask &= history[column].astype(str).to_numpy() == str(value)
        past = history[mask].sort_values(time_column)
        start = pd.to_datetime(fc["target_time"]).min()
        span = pd.to_datetime(fc["target_time"]).max() - start
        past = past[pd.to_datetime(past[time_column]) >= start - 4 * span]
        ax.plot(pd.to_datetime(past[time_column]), past[target] / unit, color="black", lw=1.1,
                label="actual")  # fmt: skip
        times = pd.to_datetime(fc["target_time"])
        ax.fill_between(times, fc["p10"] / unit, fc["p90"] / unit, color="tab:blue", alpha=0.25,
                        label="P10–P90")  # fmt: skip
        ax.plot(times, fc["p50"] / unit, color="tab:blue", lw=1.6, label="P50")
        ax.set_title(" / ".join(str(k) for k in key), fontsize=10, loc="left")
        ax.set_ylabel(unit_label)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
