"""The monitor step: drift of served inputs, realized accuracy, alerts' metrics, retraining.

    python -m components.monitor --use-case crop_demand --model-repository model_repository \
        --prediction-logs logs/crop_demand --actuals data/raw/crop_demand --output reports/monitor

It reads the model server's prediction logs (``serving/prediction_log.py``: sampled
``PredictionLog`` records in TFRecord files) for a window, and for the model version that served
them (the newest version in the window unless ``version`` is given):

1. **Drift**: each served input against the version's training statistics
   (``assets.extra/training_statistics.json``, and ``reference_sample.parquet`` for the
   two-sample test): population stability index and a KS or chi-square test per feature, shares
   per category for the keys (:mod:`perucast.drift`), and PSI over time.
2. **Realized accuracy**, when ``actuals_dir`` holds the use case's target table (raw data
   ingested after the forecasts were made): each logged forecast joined with the actual values
   of its target periods (:mod:`perucast.realized`): MASE, weighted quantile loss and p10-p90
   coverage per segment and per target period, with late (pending) and missing actuals counted,
   against the version's evaluation-time level (``assets.extra/evaluation.json``).
3. **Decision**: retraining is recommended when at least ``min_drifted_features`` features
   drifted, or, with at least ``min_matched_actuals`` forecasts scored, when realized MASE is
   above the evaluation-time MASE by more than ``accuracy_margin`` (relative) or coverage fell
   below the evaluation-time coverage by more than ``coverage_margin`` (absolute).

It writes one directory, atomically: ``report.json`` (everything, machine-readable),
``report.md`` and ``report.html`` (self-contained, plots inlined), ``plots/*.png``,
``drift.csv``, ``drift_over_time.csv``, ``realized_segments.csv``, ``realized_periods.csv`` and
``metrics.prom`` (Prometheus text format; the names the alerts in
``manifests/components/monitoring/prometheusrule.yaml`` use). With ``pushgateway`` set, the same
metrics are pushed to a Prometheus Pushgateway (job ``perucast-monitor``, grouped by model); a
failed push is logged and recorded in the report, not fatal: the report and the decision still
stand, and ``PerucastMonitorStale`` fires if no push arrives.

Exit codes (CLI): 0 the monitor ran (whatever it found; the decision is in the report and on
stdout), 2 usage, 3 logs, model version, references or actuals not found or unreadable.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import USE_CASE_NAMES, UseCaseName, get_use_case
from perucast.drift import DriftConfig, FeatureDrift
from perucast.realized import RealizedConfig

log = logging.getLogger("perucast.monitor")

REPORT_FILE = "report.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
METRICS_FILE = "metrics.prom"
PLOTS_DIR = "plots"
PUSH_JOB = "perucast-monitor"

# The metrics the alerts use (manifests/components/monitoring/prometheusrule.yaml).
METRIC_PREFIX = "perucast_monitor_"
MONITOR_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "feature_psi": ("Population stability index of a served input vs training.", ("feature",)),
    "feature_pvalue": (
        "p-value of the feature's two-sample or chi-square test.",
        ("feature", "test"),
    ),
    "feature_drifted": ("1 when the feature is flagged as drifted.", ("feature",)),
    "drifted_features": ("Features flagged as drifted.", ()),
    "predictions": ("Logged predictions (instances) in the window, served version.", ()),
    "realized_mase": ("Realized MASE of logged forecasts, per segment.", ("segment",)),
    "realized_quantile_loss": ("Realized weighted quantile loss, per segment.", ("segment",)),
    "realized_coverage": ("Realized p10-p90 interval coverage, per segment.", ("segment",)),
    "evaluation_mase": ("The served version's evaluation-time MASE.", ()),
    "evaluation_quantile_loss": ("The served version's evaluation-time wQL.", ()),
    "evaluation_coverage": ("The served version's evaluation-time p10-p90 coverage.", ()),
    "accuracy_margin": ("Relative MASE margin over the evaluation level that alerts.", ()),
    "coverage_margin": ("Absolute coverage margin under the evaluation level that alerts.", ()),
    "actuals": ("Forecast periods by actual-value state.", ("state",)),
    "retrain_recommended": ("1 when the monitor recommends retraining.", ()),
    "last_run_timestamp_seconds": ("When the monitor last ran (Unix time).", ()),
}
# realized metric name in perucast.realized -> metric suffix here
_REALIZED = {
    "mase": "realized_mase",
    "wql": "realized_quantile_loss",
    "coverage_80": "realized_coverage",
}
_EVALUATION = {
    "mase": "evaluation_mase",
    "wql": "evaluation_quantile_loss",
    "coverage_80": "evaluation_coverage",
}


class MonitorError(RuntimeError):
    """Inputs the monitor cannot use (the message names which and why)."""


class MonitorConfig(BaseModel):
    """One monitor run.

    Attributes:
        use_case: crop_demand or fish_stock.
        model_repository: The repository the server loads from (``<repo>/<model>/<version>``).
        model_name: The served model's name (default: the use case's name).
        prediction_logs: The logging config's ``filename_prefix``, or a directory of
            ``*.tfrecord`` prediction logs.
        actuals_dir: Raw tables holding the use case's target table (the latest ingest); None
            measures drift only.
        output_dir: The report directory (replaced atomically).
        version: The version to monitor (default: the newest version in the window's logs).
        window_days: The window's length (when ``window_start`` is not given).
        window_start: The window's start (default: ``window_end`` - ``window_days``).
        window_end: The window's end (default: just after the newest logged record).
        drift: Drift thresholds.
        realized: How forecasts are placed on their origin.
        accuracy_margin: Retrain when realized MASE > evaluation MASE x (1 + this).
        coverage_margin: Retrain when realized coverage < evaluation coverage - this.
        min_matched_actuals: Forecast periods with actuals needed before accuracy can decide.
        min_drifted_features: Drifted features that make drift alone decide.
        time_freq: Buckets of the drift-over-time plot (pandas offset alias; default: the use
            case's period).
        pushgateway: ``host:port`` or URL of a Prometheus Pushgateway ("" = do not push).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    model_repository: Path
    model_name: str | None = None
    prediction_logs: Path
    actuals_dir: Path | None = None
    output_dir: Path
    version: int | None = Field(default=None, ge=1)
    window_days: float = Field(default=28.0, gt=0, le=3660)
    window_start: datetime | None = None
    window_end: datetime | None = None
    drift: DriftConfig = Field(default_factory=DriftConfig)
    realized: RealizedConfig = Field(default_factory=RealizedConfig)
    accuracy_margin: float = Field(default=0.2, ge=0, le=10)
    coverage_margin: float = Field(default=0.1, ge=0, le=1)
    min_matched_actuals: int = Field(default=100, ge=1)
    min_drifted_features: int = Field(default=1, ge=1)
    time_freq: str | None = None
    pushgateway: str = ""

    @model_validator(mode="after")
    def _check(self) -> MonitorConfig:
        if self.time_freq is not None:
            try:
                pd.tseries.frequencies.to_offset(self.time_freq)
            except ValueError as err:
                raise ValueError(f"time_freq {self.time_freq!r}: {err}") from None
        for name in ("window_start", "window_end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:  # naive times are UTC
                object.__setattr__(self, name, value.replace(tzinfo=UTC))
        if self.window_start and self.window_end and self.window_start >= self.window_end:
            raise ValueError(f"window_start {self.window_start} is not before {self.window_end}")
        return self

    @property
    def served_name(self) -> str:
        return self.model_name or self.use_case

    @classmethod
    def from_settings(cls, **settings: Any) -> MonitorConfig:
        """A config from flat settings (CLI options, KFP parameters): ``psi_threshold`` and
        ``p_value`` go to ``drift``, the rest are fields."""
        drift = {k: settings.pop(k) for k in ("psi_threshold", "p_value") if k in settings}
        return cls(drift=drift, **settings)


@dataclass
class Check:
    """One retraining criterion: its value, the threshold, whether it fired, and why not."""

    name: str
    value: float | None
    threshold: float | None
    fired: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _num(self.value),
            "threshold": _num(self.threshold),
            "fired": self.fired,
            "note": self.note,
        }


@dataclass
class Decision:
    """Whether to retrain, and the checks that decided it."""

    retrain: bool
    reasons: list[str]
    checks: list[Check]

    def to_dict(self) -> dict[str, Any]:
        return {
            "retrain": self.retrain,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass
class MonitorResult:
    """What a monitor run found (``report`` is ``report.json``)."""

    output_dir: Path
    report: dict[str, Any]
    decision: Decision
    drifts: list[FeatureDrift] = field(default_factory=list)

    @property
    def retrain(self) -> bool:
        return self.decision.retrain


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def decide(
    drifts: Sequence[FeatureDrift],
    realized_all: Mapping[str, Any] | None,
    evaluation_all: Mapping[str, Any] | None,
    config: MonitorConfig,
) -> Decision:
    """The retraining decision from drift and from realized vs evaluation-time accuracy.

    Args:
        drifts: ``perucast.drift.feature_drift``'s result.
        realized_all: The realized ``"all"`` segment (``mase``, ``coverage_80``, ``n``), or None
            without actuals.
        evaluation_all: The version's evaluation-time ``"all"`` metrics, or None.
        config: Thresholds.
    """
    drifted = [d.feature for d in drifts if d.drifted]
    checks = [
        Check(
            "drift",
            float(len(drifted)),
            float(config.min_drifted_features),
            len(drifted) >= config.min_drifted_features,
            f"drifted: {', '.join(drifted)}" if drifted else "no feature drifted",
        )
    ]
    n = int((realized_all or {}).get("n") or 0)
    for name, metric, worse_above in (
        ("accuracy", "mase", True),
        ("coverage", "coverage_80", False),
    ):
        realized = _num((realized_all or {}).get(metric))
        reference = _num((evaluation_all or {}).get(metric))
        if realized_all is None:
            checks.append(Check(name, None, None, False, "no actuals given"))
            continue
        if reference is None:
            checks.append(Check(name, realized, None, False, "no evaluation-time level"))
            continue
        threshold = (
            reference * (1 + config.accuracy_margin)
            if worse_above
            else reference - config.coverage_margin
        )
        if realized is None or n < config.min_matched_actuals:
            note = f"{n} forecast periods with actuals, fewer than {config.min_matched_actuals}"
            checks.append(Check(name, realized, threshold, False, note))
            continue
        fired = realized > threshold if worse_above else realized < threshold
        relation = (">" if fired else "<=") if worse_above else ("<" if fired else ">=")
        note = f"realized {realized:.3f} {relation} {threshold:.3f} (evaluation {reference:.3f})"
        checks.append(Check(name, realized, threshold, fired, note))
    reasons = []
    for check in checks:
        if not check.fired:
            continue
        if check.name == "drift":
            reasons.append(f"{len(drifted)} feature(s) drifted: {', '.join(drifted)}")
        elif check.name == "accuracy":
            reasons.append(f"realized MASE above the evaluation level: {check.note}")
        else:
            reasons.append(f"interval coverage below the evaluation level: {check.note}")
    return Decision(bool(reasons), reasons, checks)


# --- metrics ----------------------------------------------------------------------------------


def metrics_registry(report: Mapping[str, Any], config: MonitorConfig, now: float):
    """The run's Prometheus gauges (``MONITOR_METRICS``) in a fresh registry."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    model = config.served_name
    gauges = {
        key: Gauge(METRIC_PREFIX + key, help_text, ("model", *labels), registry=registry)
        for key, (help_text, labels) in MONITOR_METRICS.items()
    }

    def put(key: str, value: Any, *labels: str) -> None:
        number = _num(value)
        if number is not None:
            gauges[key].labels(model, *labels).set(number)

    drifted = 0
    for d in report["drift"]["features"]:
        put("feature_psi", d["psi"], d["feature"])
        if d["test"]:
            put("feature_pvalue", d["p_value"], d["feature"], d["test"])
        put("feature_drifted", int(d["drifted"]), d["feature"])
        drifted += int(d["drifted"])
    put("drifted_features", drifted)
    put("predictions", report["predictions"]["rows"])
    realized = report.get("realized")
    if realized:
        for segment, values in realized["segments"].items():
            for metric, key in _REALIZED.items():
                put(key, values.get(metric), segment)
        for state, count in realized["states"].items():
            put("actuals", count, state)
    overall = (report.get("evaluation") or {}).get("overall") or {}
    for metric, key in _EVALUATION.items():
        put(key, overall.get(metric))
    put("accuracy_margin", config.accuracy_margin)
    put("coverage_margin", config.coverage_margin)
    put("retrain_recommended", int(report["decision"]["retrain"]))
    put("last_run_timestamp_seconds", now)
    return registry


def push_metrics(registry, gateway: str, model: str) -> dict[str, Any]:
    """Pushes ``registry`` to a Pushgateway (replacing the model's group); never raises."""
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(gateway, job=PUSH_JOB, registry=registry, grouping_key={"model": model})
    except Exception as err:  # an unreachable gateway must not lose the report or the decision
        log.error("could not push metrics to the Pushgateway %s: %s", gateway, err)
        return {"gateway": gateway, "pushed": False, "error": str(err)}
    return {"gateway": gateway, "pushed": True, "error": ""}


# --- the step ---------------------------------------------------------------------------------


def _window(predictions: pd.DataFrame, config: MonitorConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    if config.window_end is not None:
        end = pd.Timestamp(config.window_end)
    elif not predictions.empty:
        end = predictions["timestamp"].max() + pd.Timedelta(seconds=1)
    else:
        end = pd.Timestamp(datetime.now(UTC))
    if config.window_start is not None:
        return pd.Timestamp(config.window_start), end
    return end - pd.Timedelta(timedelta(days=config.window_days)), end


def _bucket_freq(times: pd.Series, finest: str, min_rows: int) -> str:
    """The finest of ``finest``, quarters and years whose typical bucket has ``min_rows`` rows
    (a PSI from fewer rows is not computed), for the drift-over-time plot."""
    for freq in (finest, "QS", "YS"):
        if times.empty:
            return freq
        sizes = times.to_frame("t").groupby(pd.Grouper(key="t", freq=freq)).size()
        if sizes[sizes > 0].median() >= min_rows:
            return freq
    return "YS"


def _version_dir(config: MonitorConfig, version: int) -> Path:
    path = config.model_repository / config.served_name / str(version)
    if not path.is_dir():
        raise MonitorError(
            f"version {version} of {config.served_name!r} is not in {config.model_repository} "
            f"(no {path}): the logs name a version this repository lacks"
        )
    return path


def _read_actuals(config: MonitorConfig, use_case) -> pd.DataFrame:
    from perucast.datasets import read_table

    target = use_case.target
    columns = [*target.series_keys, target.time_column, target.column]
    try:
        return read_table(config.actuals_dir, target.table, columns)
    except FileNotFoundError as err:
        raise MonitorError(f"actuals: {err}") from None
    except KeyError as err:
        raise MonitorError(f"actuals: table {target.table!r} lacks column {err}") from None


def _attach_origins(predictions: pd.DataFrame, realized) -> pd.Series:
    """Each prediction's resolved origin (NaT when unresolved), for drift over origin time."""
    rows = realized.rows
    if rows.empty:
        return pd.Series(pd.NaT, index=predictions.index)
    first = rows.groupby("prediction")["origin"].first()
    return pd.Series(predictions.reset_index(drop=True).index.map(first), index=predictions.index)


def monitor(config: MonitorConfig) -> MonitorResult:
    """Runs the monitor (module docstring) and writes its report directory.

    Raises:
        MonitorError: No logs, an unknown version, missing references or unreadable actuals.
    """
    from perucast.drift import drift_over_time, exempt_columns, feature_drift
    from perucast.export import load_monitoring_references
    from perucast.io import atomic_directory
    from perucast.prediction_logs import read_predictions
    from perucast.realized import realized_accuracy

    started = time.perf_counter()
    use_case = get_use_case(config.use_case)
    model = config.served_name
    source = config.prediction_logs
    if not source.exists() and not list(source.parent.glob(f"{source.name}-*.tfrecord")):
        raise MonitorError(f"no prediction logs at {source} (a directory or a filename prefix)")
    log.info("monitor %s: reading prediction logs %s", model, source)
    every = read_predictions(source, model_name=model, end=config.window_end)
    start, end = _window(every, config)
    in_window = (
        every[(every["timestamp"] >= start) & (every["timestamp"] < end)] if len(every) else every
    )
    versions = sorted(int(v) for v in in_window["model_version"].unique()) if len(in_window) else []
    version = config.version or (
        int(in_window.sort_values("timestamp")["model_version"].iloc[-1]) if versions else None
    )
    if version is None:
        raise MonitorError(
            f"no logged predictions of {model!r} between {start.isoformat()} and "
            f"{end.isoformat()} in {source}: is logging_config set and sampling_rate > 0?"
        )
    frame = in_window[in_window["model_version"] == version].reset_index(drop=True)
    version_dir = _version_dir(config, version)
    try:
        refs = load_monitoring_references(version_dir)
    except FileNotFoundError as err:
        raise MonitorError(
            f"version {version} has no monitoring references ({err}): versions pushed before "
            "monitoring existed lack assets.extra/training_statistics.json; push again"
        ) from None
    log.info(
        "monitor %s: version %d, %d logged predictions in the window (%d other versions' rows)",
        model,
        version,
        len(frame),
        len(in_window) - len(frame),
    )

    drifts = feature_drift(
        refs.training_statistics,
        frame,
        reference_sample=refs.reference_sample,
        config=config.drift,
        exempt=use_case.calendar_inputs,
        period_inputs=use_case.period_inputs,
    )
    realized = None
    time_column = "timestamp"
    spec_period = use_case.feature_spec(use_case.default_horizon).period
    if config.actuals_dir is not None:
        actuals = _read_actuals(config, use_case)
        realized = realized_accuracy(frame, actuals, use_case, config=config.realized)
        frame = frame.assign(origin=_attach_origins(frame, realized))
        if frame["origin"].notna().any():
            time_column = "origin"  # replays and back-fills: request time says nothing
    timed = frame.dropna(subset=[time_column])
    freq = config.time_freq or _bucket_freq(
        timed[time_column], spec_period if time_column == "origin" else "D", config.drift.min_rows
    )
    over_time = drift_over_time(
        refs.training_statistics,
        timed,
        freq=freq,
        time_column=time_column,
        config=config.drift,
        # a period input has one value per bucket: no distribution to compare over time
        exempt=(*use_case.calendar_inputs, *use_case.period_inputs),
    )
    evaluation = refs.evaluation if refs.evaluation.get("available", True) else None
    realized_all = realized.segment() if realized is not None else None
    decision = decide(drifts, realized_all, (evaluation or {}).get("overall"), config)

    now = time.time()
    report: dict[str, Any] = {
        "use_case": config.use_case,
        "model": model,
        "version": version,
        "version_dir": str(version_dir),
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "window": {"start": start.isoformat(), "end": end.isoformat(), "days": config.window_days},
        "predictions": {
            "rows": len(frame),
            "records": int(frame["record"].nunique()) if len(frame) else 0,
            "other_versions": {
                str(v): int((in_window["model_version"] == v).sum())
                for v in versions
                if v != version
            },
            "skipped": dict(every.attrs.get("skipped", {})),
            "unreadable_files": [str(p) for p in every.attrs.get("unreadable_files", [])],
            "first": frame["timestamp"].min().isoformat() if len(frame) else None,
            "last": frame["timestamp"].max().isoformat() if len(frame) else None,
        },
        "drift": {
            "config": config.drift.model_dump(),
            "reference_sample_rows": (
                None if refs.reference_sample is None else len(refs.reference_sample)
            ),
            "time_axis": time_column,
            "calendar_inputs": exempt_columns(list(frame.columns), use_case.calendar_inputs),
            "features": [_drift_dict(d) for d in drifts],
        },
        "realized": realized.to_dict() if realized is not None else None,
        "evaluation": evaluation,
        "decision": decision.to_dict(),
        "config": config.model_dump(mode="json"),
    }
    registry = metrics_registry(report, config, now)
    if config.pushgateway:
        report["push"] = push_metrics(registry, config.pushgateway, model)

    from prometheus_client import generate_latest

    from components.monitor_report import write_report

    with atomic_directory(config.output_dir) as tmp:
        (tmp / METRICS_FILE).write_bytes(generate_latest(registry))
        write_report(tmp, report, drifts, over_time, realized)
    report["seconds"] = round(time.perf_counter() - started, 2)
    log.info(
        "monitor %s v%d: %d of %d features drifted; retrain %s (%.1fs)",
        model,
        version,
        sum(d.drifted for d in drifts),
        len(drifts),
        "RECOMMENDED" if decision.retrain else "not needed",
        report["seconds"],
    )
    return MonitorResult(config.output_dir, report, decision, drifts)


def _drift_dict(d: FeatureDrift) -> dict[str, Any]:
    return {
        "feature": d.feature,
        "kind": d.kind,
        "status": d.status,
        "drifted": d.drifted,
        "psi": _num(d.psi),
        "test": d.test,
        "statistic": _num(d.statistic),
        "p_value": _num(d.p_value),
        "n_current": d.n_current,
        "unit": d.unit,
        "n_periods": d.n_periods,
        "n_reference": d.n_reference,
        "reference_mean": _num(d.reference_mean),
        "current_mean": _num(d.current_mean),
        "bins": list(d.bins),
        "reference_shares": [float(x) for x in d.reference_shares],
        "current_shares": [float(x) for x in d.current_shares],
    }


# --- CLI --------------------------------------------------------------------------------------


def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    model_repository: Annotated[Path, typer.Option(help="The model repository served from.")],
    prediction_logs: Annotated[
        Path, typer.Option(help="The logging config's filename_prefix, or a directory of logs.")
    ],
    output_dir: Annotated[Path, typer.Option("--output", help="Report directory (replaced).")],
    actuals_dir: Annotated[
        Path | None, typer.Option("--actuals", help="Raw tables with the target's actuals.")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Served model name (default: the use case).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Version to monitor (default: newest logged).")
    ] = None,
    window_days: Annotated[float, typer.Option(help="Window length in days.")] = 28.0,
    window_end: Annotated[
        datetime | None, typer.Option(help="Window end, UTC (default: after the last record).")
    ] = None,
    psi_threshold: Annotated[float, typer.Option(help="PSI that flags a feature.")] = 0.25,
    p_value: Annotated[float, typer.Option(help="Test p-value that flags a feature.")] = 0.01,
    accuracy_margin: Annotated[
        float, typer.Option(help="Relative MASE margin over the evaluation level.")
    ] = 0.2,
    coverage_margin: Annotated[
        float, typer.Option(help="Absolute coverage margin under the evaluation level.")
    ] = 0.1,
    min_matched_actuals: Annotated[
        int, typer.Option(help="Scored forecast periods needed for accuracy to decide.")
    ] = 100,
    min_drifted_features: Annotated[
        int, typer.Option(help="Drifted features that recommend retraining.")
    ] = 1,
    pushgateway: Annotated[str, typer.Option(help="Pushgateway host:port ('' = none).")] = "",
) -> None:
    """Drift and realized accuracy of a served model from its prediction logs."""
    from perucast.logs import setup_logging

    setup_logging()
    run_cli(
        use_case=use_case,
        model_repository=model_repository,
        model_name=model_name,
        prediction_logs=prediction_logs,
        actuals_dir=actuals_dir,
        output_dir=output_dir,
        version=version,
        window_days=window_days,
        window_end=window_end,
        psi_threshold=psi_threshold,
        p_value=p_value,
        accuracy_margin=accuracy_margin,
        coverage_margin=coverage_margin,
        min_matched_actuals=min_matched_actuals,
        min_drifted_features=min_drifted_features,
        pushgateway=pushgateway,
    )


def run_cli(**settings: Any) -> MonitorResult:
    """The command lines' monitor run: exit 2 for bad settings, 3 for missing inputs, else the
    summary printed."""
    from perucast.exitcodes import ExitCode

    try:
        config = MonitorConfig.from_settings(**settings)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        result = monitor(config)
    except MonitorError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND) from None
    typer.echo(summary_text(result.report))
    return result


def summary_text(report: Mapping[str, Any]) -> str:
    """A few lines for the terminal: drifted features, realized accuracy, the decision."""
    features = report["drift"]["features"]
    drifted = [f for f in features if f["drifted"]]
    lines = [
        f"{report['model']} v{report['version']}: {report['predictions']['rows']} logged "
        f"predictions {report['window']['start'][:19]} .. {report['window']['end'][:19]}",
        f"  drift: {len(drifted)} of {len(features)} features drifted"
        + (
            ": " + ", ".join(f"{f['feature']} (PSI {f['psi']:.2f})" for f in drifted[:8])
            if drifted
            else ""
        ),
    ]
    realized = report.get("realized")
    if realized:
        states = realized["states"]
        overall = realized["segments"].get("all", {})
        ev = (report.get("evaluation") or {}).get("overall") or {}

        def show(value: Any, digits: int = 3) -> str:
            return "n/a" if value is None else f"{value:.{digits}f}"

        lines.append(
            f"  realized: MASE {show(overall.get('mase'))} (evaluation {show(ev.get('mase'))}), "
            f"coverage {show(overall.get('coverage_80'), 2)} (evaluation "
            f"{show(ev.get('coverage_80'), 2)}); periods matched {states.get('matched', 0)}, "
            f"pending {states.get('pending', 0)}, missing {states.get('missing', 0)}"
        )
    decision = report["decision"]
    lines.append(
        "  retrain: "
        + ("RECOMMENDED: " + "; ".join(decision["reasons"]) if decision["retrain"] else "no")
    )
    return "\n".join(lines)


def main() -> None:
    typer.run(cli)


if __name__ == "__main__":
    main()
