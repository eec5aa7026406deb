"""The monitor step's report: JSON, Markdown and HTML for people, plots and CSV tables.

`write_report` fills the (temporary) report directory of ``components.monitor.monitor``:

* ``report.json``: the run's report dict (NaN and infinities as null);
* ``report.md`` and ``report.html``: the decision and its reasons first, then the window and
  counts, the drift table and plots, realized accuracy against the evaluation-time level, and
  the retraining checks. The HTML is self-contained (plots inlined as PNG), the Markdown links
  ``plots/*.png``;
* ``plots/*.png``: PSI per feature, PSI over time, reference vs current shares of drifted
  features, realized MASE and coverage by target period;
* ``drift.csv`` (one row per feature), ``drift_over_time.csv``, and with actuals
  ``realized_segments.csv`` (with the evaluation-time level beside each metric) and
  ``realized_periods.csv``.

The readers are a fishery manager or supply planner deciding whether to trust this month's
forecasts, and the MLOps engineer deciding whether to retrain or to chase a broken data feed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from components.monitor import HTML_FILE, MARKDOWN_FILE, PLOTS_DIR, REPORT_FILE
from perucast.drift import FeatureDrift, drift_frame
from perucast.evaluation_report import Block, html_page, markdown_page
from perucast.io import write_text_atomic

if TYPE_CHECKING:
    from perucast.realized import RealizedAccuracy

DRIFT_FILE = "drift.csv"
DRIFT_OVER_TIME_FILE = "drift_over_time.csv"
SEGMENTS_FILE = "realized_segments.csv"
PERIODS_FILE = "realized_periods.csv"

MAX_PSI_BARS = 25
MAX_OVER_TIME_LINES = 8
TOP_OVER_TIME = 5  # features over time when none drifted
MAX_SHARE_PANELS = 4
# Realized metrics compared with the evaluation: name in perucast.realized -> label.
COMPARED = {"mase": "MASE", "wql": "wQL", "coverage_80": "coverage 80%"}
_DRIFTED_COLOR, _OTHER_COLOR, _HIGH_COLOR = "tab:red", "tab:blue", "tab:orange"


# --- formatting -------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None, numpy scalars as Python, times as ISO text."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _num(value: Any, digits: int = 3) -> str:
    number = _finite(value)
    if number is None:
        return "–"
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:.{digits}g}" if abs(number) < 1e-3 and number else f"{number:.{digits}f}"


def _pvalue(value: Any) -> str:
    number = _finite(value)
    if number is None:
        return "–"
    return f"{number:.2g}" if number < 0.001 else f"{number:.3f}"


def _pct(value: Any) -> str:
    number = _finite(value)
    return "–" if number is None else f"{number:.1%}"


def _metric(metric: str, value: Any) -> str:
    return _pct(value) if metric == "coverage_80" else _num(value)


def _count(value: Any) -> str:
    number = _finite(value)
    return "–" if number is None else f"{int(number):,}"


def _table(header: list[str], rows: list[list[str]]) -> Block:
    return ("table", (header, rows))


# --- tables -----------------------------------------------------------------------------------


def drift_order(drifts: Sequence[FeatureDrift]) -> list[FeatureDrift]:
    """Drifted features first, then by PSI, largest first (no PSI last)."""
    return sorted(drifts, key=lambda d: (not d.drifted, -(_finite(d.psi) or -1.0), d.feature))


def drift_table(drifts: Sequence[FeatureDrift]) -> pd.DataFrame:
    """``drift.csv``: one row per feature in `drift_order`, with ``drifted``."""
    ordered = drift_order(drifts)
    table = drift_frame(ordered)
    table.insert(3, "drifted", [d.drifted for d in ordered])
    table.insert(table.columns.get_loc("n_current") + 1, "unit", [d.unit for d in ordered])
    return table


def segment_table(realized: RealizedAccuracy, evaluation: Mapping[str, Any] | None) -> pd.DataFrame:
    """``realized_segments.csv``: the realized segments with ``evaluation_<metric>`` beside."""
    table = realized.by_segment.copy()
    segments = (evaluation or {}).get("segments") or {}
    for metric in COMPARED:
        table[f"evaluation_{metric}"] = [
            _finite((segments.get(s) or {}).get(metric)) for s in table["segment"]
        ]
    return table


def _context_rows(report: Mapping[str, Any]) -> list[list[str]]:
    window = report["window"]
    predictions = report["predictions"]
    other = predictions.get("other_versions") or {}
    skipped = predictions.get("skipped") or {}
    unreadable = predictions.get("unreadable_files") or []
    rows = [
        ["model, version", f"{report['model']} v{report['version']} ({report['version_dir']})"],
        [
            "window (UTC)",
            f"{window['start'][:19]} .. {window['end'][:19]} ({window['days']:g} days)",
        ],
        [
            "logged predictions",
            f"{predictions['rows']:,} instances in {predictions['records']:,} requests"
            + (
                f", {predictions['first'][:19]} .. {predictions['last'][:19]}"
                if predictions.get("first")
                else ""
            ),
        ],
        [
            "other versions in the window (not monitored)",
            ", ".join(f"v{v}: {n:,}" for v, n in other.items()) or "none",
        ],
        [
            "skipped records (not per-instance Predict)",
            ", ".join(f"{k}: {n:,}" for k, n in skipped.items()) or "none",
        ],
        [
            "unreadable log files",
            f"{len(unreadable)}: {', '.join(Path(p).name for p in unreadable)}"
            if unreadable
            else "none",
        ],
        ["generated at", str(report.get("generated_at", ""))],
    ]
    push = report.get("push")
    if push:
        state = "pushed" if push.get("pushed") else f"FAILED ({push.get('error', '')})"
        rows.append(["Pushgateway", f"{push.get('gateway')}: {state}"])
    return rows


def _drift_rows(drifts: Sequence[FeatureDrift]) -> list[list[str]]:
    return [
        [
            d.feature,
            d.kind,
            _num(d.psi),
            d.test or "–",
            _pvalue(d.p_value),
            _count(d.n_current) + (" periods" if d.unit == "period" else ""),
            _num(d.reference_mean),
            _num(d.current_mean),
            d.status.upper() if d.status != "insufficient data" else d.status,
        ]
        for d in drift_order(drifts)
    ]


def _segment_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in table.to_dict("records"):
        cells = [str(r["segment"])]
        for metric in COMPARED:
            cells += [_metric(metric, r[metric]), _metric(metric, r[f"evaluation_{metric}"])]
        cells += [_count(r["n"]), _count(r["pending"]), _count(r["missing"])]
        rows.append(cells)
    return rows


def _check_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for check in report["decision"]["checks"]:
        digits = 0 if check["name"] == "drift" else 3
        rows.append(
            [
                check["name"],
                "–" if check["value"] is None else f"{check['value']:.{digits}f}",
                "–" if check["threshold"] is None else f"{check['threshold']:.{digits}f}",
                "FIRED" if check["fired"] else "no",
                check["note"],
            ]
        )
    return rows


# --- plots ------------------------------------------------------------------------------------


def _pyplot():
    from perucast.plots import _pyplot as pyplot

    return pyplot()


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_psi_by_feature(
    drifts: Sequence[FeatureDrift], threshold: float, path: Path
) -> Path | None:
    """Horizontal PSI bars of the top features (drifted red), with the threshold line."""
    shown = [d for d in drift_order(drifts) if _finite(d.psi) is not None][:MAX_PSI_BARS]
    if not shown:
        return None
    shown.sort(key=lambda d: d.psi or 0.0)  # largest on top
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(shown) + 1.6))
    colors = [
        _DRIFTED_COLOR if d.drifted else _HIGH_COLOR if (d.psi or 0) >= threshold else _OTHER_COLOR
        for d in shown
    ]
    y = np.arange(len(shown))
    bars = ax.barh(y, [d.psi or 0.0 for d in shown], color=colors)
    for bar, d in zip(bars, shown, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {d.psi:.2f}",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(y, [d.feature for d in shown], fontsize=8)
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("population stability index vs training")
    ax.set_title("Input drift per feature (red: drifted; orange: large PSI, not significant)")
    ax.legend(fontsize=8, loc="lower right")
    ax.margins(x=0.08)  # room for the labels
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def over_time_features(
    drifts: Sequence[FeatureDrift], available: Sequence[str] | None = None
) -> list[str]:
    """The features drawn over time: the drifted ones, else the top `TOP_OVER_TIME` by PSI,
    among ``available`` (the features drift over time was computed for; period inputs have one
    value per bucket and are left out of it)."""
    ordered = [
        d
        for d in drift_order(drifts)
        if _finite(d.psi) is not None and (available is None or d.feature in available)
    ]
    drifted = [d.feature for d in ordered if d.drifted]
    return (
        drifted[:MAX_OVER_TIME_LINES] if drifted else [d.feature for d in ordered][:TOP_OVER_TIME]
    )


def plot_psi_over_time(
    over_time: pd.DataFrame,
    features: Sequence[str],
    threshold: float,
    time_axis: str,
    path: Path,
) -> Path | None:
    """PSI per time bucket of ``features`` with the threshold line."""
    if over_time.empty or not features:
        return None
    data = over_time[over_time["feature"].isin(features)].copy()
    data["psi"] = pd.to_numeric(data["psi"], errors="coerce")
    if data["psi"].notna().sum() == 0:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, feature in enumerate(features):
        part = data[data["feature"] == feature].sort_values("bucket")
        if part["psi"].notna().any():
            ax.plot(part["bucket"], part["psi"], marker="o", ms=3, color=f"C{i}", label=feature)
    ax.axhline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(
        "forecast origin (resolved from each request's content)"
        if time_axis == "origin"
        else "request time (UTC)"
    )
    ax.set_ylabel("PSI vs training")
    ax.set_title("Input drift over time (buckets with too few values are left out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.autofmt_xdate()
    return _save(fig, path)


def plot_shares(drifts: Sequence[FeatureDrift], path: Path) -> Path | None:
    """Reference vs current share per bin of up to `MAX_SHARE_PANELS` drifted features."""
    shown = [d for d in drift_order(drifts) if d.drifted][:MAX_SHARE_PANELS]
    if not shown:
        return None
    plt = _pyplot()
    cols = min(2, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.8 * rows), squeeze=False)
    for ax, d in zip(axes.flat, shown, strict=False):
        x = np.arange(len(d.bins))
        ax.bar(x - 0.2, d.reference_shares, 0.4, color="tab:gray", label="training")
        ax.bar(x + 0.2, d.current_shares, 0.4, color=_DRIFTED_COLOR, label="served")
        ax.set_xticks(x, d.bins, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("share")
        ax.set_title(f"{d.feature} (PSI {d.psi:.2f})", fontsize=10)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_realized_by_period(
    by_period: pd.DataFrame,
    evaluation: Mapping[str, Any] | None,
    accuracy_margin: float,
    coverage_margin: float,
    path: Path,
) -> Path | None:
    """Realized MASE and coverage per target period with the evaluation level and alert lines."""
    if by_period.empty or not (by_period["n"] > 0).any():
        return None
    data = by_period[by_period["n"] > 0]
    times = pd.to_datetime(data["target_time"])
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for ax, metric, label in (
        (axes[0], "mase", "MASE"),
        (axes[1], "coverage_80", "P10–P90 coverage"),
    ):
        ax.plot(
            times,
            data[metric].astype(float),
            marker="o" if len(data) <= 60 else None,  # dots only while they stay apart
            ms=3,
            color="tab:blue",
            label=f"realized {label}",
        )
        level = _finite((evaluation or {}).get(metric))
        if level is not None:
            alert = level * (1 + accuracy_margin) if metric == "mase" else level - coverage_margin
            ax.axhline(level, color="tab:green", lw=1.2, label=f"evaluation {level:.3g}")
            ax.axhline(alert, color="tab:red", ls="--", lw=1.2, label=f"alert at {alert:.3g}")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_xlabel("target period")
    axes[0].set_title("Realized accuracy of the logged forecasts by target period")
    fig.autofmt_xdate()
    return _save(fig, path)


# --- the document -----------------------------------------------------------------------------


def _headline(report: Mapping[str, Any]) -> list[Block]:
    decision = report["decision"]
    blocks: list[Block] = [
        ("h1", f"Monitor: {report['model']} v{report['version']} ({report['use_case']})")
    ]
    if decision["retrain"]:
        blocks.append(("p", "Decision: RETRAINING RECOMMENDED, because:"))
        blocks.append(("ul", list(decision["reasons"])))
    else:
        blocks.append(("p", "Decision: no retraining needed: no retraining check fired."))
    return blocks


def _advice(report: Mapping[str, Any], drifted: Sequence[str]) -> list[str]:
    fired = {c["name"] for c in report["decision"]["checks"] if c["fired"]}
    items = []
    if drifted:
        items.append(
            f"Inputs that moved away from training ({', '.join(drifted[:8])}"
            f"{', ...' if len(drifted) > 8 else ''}): first rule out a broken feed (units, a "
            "sensor or source change, a pipeline bug), which is fixed upstream, not by "
            "retraining; if the world itself changed (e.g. an El Niño), retrain on data that "
            "covers it."
        )
    if fired & {"accuracy", "coverage"}:
        items.append(
            "The forecasts served are less accurate than the evaluation promised: widen the "
            "safety margins taken from the P10–P90 range when planning until a retrained "
            "version is deployed."
        )
    if not items:
        items.append("The served inputs and realized accuracy are in line with the evaluation.")
    return items


def _drift_blocks(
    report: Mapping[str, Any], drifts: Sequence[FeatureDrift], plots: Mapping[str, str]
) -> list[Block]:
    config = report["drift"]["config"]
    drifted = [d for d in drifts if d.drifted]
    insufficient = sum(d.status == "insufficient data" for d in drifts)
    sample = report["drift"].get("reference_sample_rows")
    blocks: list[Block] = [
        ("h2", "Input drift"),
        (
            "p",
            f"{len(drifted)} of {len(drifts)} features drifted. A feature is flagged when its "
            f"population stability index (PSI) against the training data is at least "
            f"{config['psi_threshold']:g} and its test rejects at p < {config['p_value']:g} "
            f"(with at least {config['min_rows']} served values; {insufficient} features had "
            "fewer). Numeric features are binned at the training quantiles and tested with "
            + (
                f"the two-sample KS test against {sample:,} sampled training rows"
                if sample
                else "a chi-square test on those bins"
            )
            + "; categorical ones compare category shares (chi-square). Inputs with one value "
            "per period for every series (the Niño index, the season quota) count their "
            "distinct values, one per period, not the instances.",
        ),
        _table(
            [
                "feature",
                "kind",
                "PSI",
                "test",
                "p-value",
                "n served",
                "training mean",
                "served mean",
                "status",
            ],
            _drift_rows(drifts),
        ),
    ]
    calendar = report["drift"].get("calendar_inputs") or []
    if calendar:
        blocks.append(
            (
                "p",
                f"Not tested: {', '.join(calendar)}, calendar inputs (a function of the date "
                "alone: a few weeks of requests always differ from years of training in them).",
            )
        )
    blocks += [("img", (name, caption)) for name, caption in plots.items()]
    if not drifted:
        blocks.append(("p", "No feature drifted, so no reference-vs-served share plot."))
    return blocks


def _realized_blocks(
    report: Mapping[str, Any],
    realized: RealizedAccuracy | None,
    segments: pd.DataFrame | None,
    plots: Mapping[str, str],
) -> list[Block]:
    blocks: list[Block] = [("h2", "Realized accuracy")]
    if realized is None or segments is None:
        blocks.append(
            ("p", "No actuals were given, so realized accuracy was not measured (drift only).")
        )
        return blocks
    states = realized.states
    total = sum(states.values())
    resolution = realized.resolution
    reasons = ", ".join(f"{k}: {n}" for k, n in realized.unresolved.items())
    evaluation = report.get("evaluation")
    blocks.append(
        (
            "p",
            f"The {realized.predictions:,} logged forecasts were placed on their forecast "
            f"origin by content ({resolution.get('content', 0):,}, of which ties broken by "
            f"time: {resolution.get('content_tiebreak', 0):,}), by request time "
            f"({resolution.get('timestamp', 0):,}), or not at all "
            f"({resolution.get('unresolved', 0):,}{'; ' + reasons if reasons else ''}); "
            f"repeats of the same forecast count once ({realized.duplicates:,} dropped).",
        )
    )
    blocks.append(
        (
            "p",
            f"They cover {total:,} forecast periods: {states.get('matched', 0):,} matched (the "
            f"actual value is in the table: scored), {states.get('pending', 0):,} pending (the "
            "period is after the last reported value of its series: not due or late, scored on "
            f"a later run) and {states.get('missing', 0):,} missing (inside the reported range "
            "but absent: a gap in the data, never scored).",
        )
    )
    if evaluation is None:
        blocks.append(("p", "This version has no evaluation-time level to compare with."))
    header = ["segment"]
    for label in COMPARED.values():
        header += [label, f"{label} at evaluation"]
    header += ["n scored", "pending", "missing"]
    blocks.append(_table(header, _segment_rows(segments)))
    blocks.append(
        (
            "p",
            "MASE: the median forecast's absolute error over the series' seasonal naive error "
            "(lower is better); wQL: weighted quantile loss over P10, P50 and P90; coverage: "
            "share of actual values within [P10, P90] (80% expected).",
        )
    )
    blocks += [("img", (name, caption)) for name, caption in plots.items()]
    return blocks


def document(
    report: Mapping[str, Any],
    drifts: Sequence[FeatureDrift],
    realized: RealizedAccuracy | None,
    segments: pd.DataFrame | None,
    drift_plots: Mapping[str, str],
    realized_plots: Mapping[str, str],
) -> list[Block]:
    """The report's blocks (``perucast.evaluation_report`` renders them)."""
    blocks = _headline(report)
    blocks.append(("h2", "What to do"))
    blocks.append(("ul", _advice(report, [d.feature for d in drift_order(drifts) if d.drifted])))
    blocks.append(("h2", "Window and logs"))
    blocks.append(_table(["", "value"], _context_rows(report)))
    blocks += _drift_blocks(report, drifts, drift_plots)
    blocks += _realized_blocks(report, realized, segments, realized_plots)
    blocks.append(("h2", "Retraining checks"))
    blocks.append(
        (
            "p",
            "Retraining is recommended when any check fires: drift when at least the threshold "
            "number of features drifted; accuracy when realized MASE is above the evaluation "
            "MASE × (1 + accuracy margin); coverage when realized coverage is below the "
            "evaluation coverage − coverage margin. Accuracy and coverage decide only with "
            "enough scored forecast periods.",
        )
    )
    blocks.append(_table(["check", "value", "threshold", "fired", "note"], _check_rows(report)))
    return blocks


def write_report(
    directory: Path,
    report: dict[str, Any],
    drifts: list[FeatureDrift],
    over_time: pd.DataFrame,
    realized: RealizedAccuracy | None,
) -> None:
    """Writes the report files into ``directory`` (module docstring).

    Args:
        directory: An existing, empty directory (the caller makes it visible atomically).
        report: The run's report (``components.monitor``): window, predictions, drift,
            realized, evaluation, decision and config.
        drifts: ``perucast.drift.feature_drift``'s result.
        over_time: ``perucast.drift.drift_over_time``'s result.
        realized: ``perucast.realized.realized_accuracy``'s result, or None without actuals.
    """
    directory = Path(directory)
    plot_dir = directory / PLOTS_DIR
    plot_dir.mkdir(exist_ok=True)
    config = report.get("config") or {}
    threshold = float(report["drift"]["config"]["psi_threshold"])
    evaluation = report.get("evaluation")

    lines = over_time_features(drifts, set(over_time["feature"]) if len(over_time) else set())
    made = [
        (
            plot_psi_by_feature(drifts, threshold, plot_dir / "psi_by_feature.png"),
            f"PSI per feature against training, top {MAX_PSI_BARS} (dashed: the threshold)",
        ),
        (
            plot_psi_over_time(
                over_time,
                lines,
                threshold,
                report["drift"]["time_axis"],
                plot_dir / "psi_over_time.png",
            ),
            "PSI over time of "
            + (
                "the drifted features"
                if any(d.drifted and d.feature in lines for d in drifts)
                else "the top features"
            )
            + f": {', '.join(lines)}",
        ),
        (
            plot_shares(drifts, plot_dir / "drift_shares.png"),
            "Share of values per bin, training vs served, of the most drifted features",
        ),
    ]
    drift_plots = {p.name: caption for p, caption in made if p is not None}

    segments = None
    realized_plots: dict[str, str] = {}
    if realized is not None:
        segments = segment_table(realized, evaluation)
        write_text_atomic(directory / SEGMENTS_FILE, segments.to_csv(index=False))
        write_text_atomic(directory / PERIODS_FILE, realized.by_period.to_csv(index=False))
        path = plot_realized_by_period(
            realized.by_period,
            (evaluation or {}).get("overall"),
            float(config.get("accuracy_margin", 0.0)),
            float(config.get("coverage_margin", 0.0)),
            plot_dir / "realized_by_period.png",
        )
        if path is not None:
            realized_plots[path.name] = (
                "Realized MASE and P10–P90 coverage by target period; green: the evaluation-time "
                "level, red dashed: where the accuracy and coverage checks fire"
            )

    write_text_atomic(directory / DRIFT_FILE, drift_table(drifts).to_csv(index=False))
    write_text_atomic(directory / DRIFT_OVER_TIME_FILE, over_time.to_csv(index=False))
    text = json.dumps(json_safe(report), indent=2, allow_nan=False)
    write_text_atomic(directory / REPORT_FILE, text + "\n")

    blocks = document(report, drifts, realized, segments, drift_plots, realized_plots)
    images = {name: (plot_dir / name).read_bytes() for name in (*drift_plots, *realized_plots)}
    title = f"Monitor: {report['model']} v{report['version']}"
    write_text_atomic(directory / MARKDOWN_FILE, markdown_page(blocks))
    write_text_atomic(directory / HTML_FILE, html_page(blocks, title, images))
