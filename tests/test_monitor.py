"""The monitor step (`components/monitor.py`, report in `components/monitor_report.py`).

A model version directory carries real monitoring references: the tiny fish stock feature
dataset's ``statistics.json`` and ``reference_sample.parquet`` (the ``fish_features`` session
fixture) and a hand-written ``evaluation.json``. The prediction logs are real ``PredictionLog``
TFRecords whose requests are the training rows of that dataset (a replay: origins are resolved
from the requests' content) and whose responses are built from the rows' true future targets,
so realized accuracy is known: P50 = the actual and P10/P90 = ∓15 % (MASE 0, coverage 1, wQL
0.02), or "bad" P50 = 3 × the actual. The actuals are the raw ``stock`` table of ``fish_tiny``
cut after ``CUT`` (later periods are pending) with one zone-month removed (a gap: missing).

Metrics are pushed to a real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``, which
``make install`` unpacks into ``.venv-tools/prometheus/bin``) on a loopback port.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import typer
from factories import predict_log_record
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from components.monitor import (
    METRIC_PREFIX,
    MONITOR_METRICS,
    PUSH_JOB,
    MonitorConfig,
    MonitorError,
    cli,
    decide,
    monitor,
)
from components.monitor_report import json_safe
from models import get_use_case
from perucast.datasets import read_features, read_table
from perucast.drift import DriftConfig
from perucast.export import EVALUATION_FILE, REFERENCE_SAMPLE_FILE, TRAINING_STATISTICS_FILE

REPO = Path(__file__).resolve().parent.parent
PUSHGATEWAY = REPO / ".venv-tools" / "prometheus" / "bin" / "pushgateway"
MODEL = "fish_stock"
USE_CASE = get_use_case(MODEL)
SPEC = USE_CASE.feature_spec(USE_CASE.default_horizon)
H = SPEC.horizon
T0 = pd.Timestamp("2026-05-04T08:00:00Z")  # when the replay ran
BATCH = 6  # instances per logged request
RECORD_SECONDS = 600  # one request every 10 minutes
SPREAD = 0.15  # P10/P90 = P50 ∓ 15 % of the actual
CUT = pd.Timestamp("2016-04-01")  # the actuals end here: later target periods are pending
GAP = ("north", pd.Timestamp("2010-06-01"))  # a zone-month absent from the actuals: missing
NINO = [c for c in SPEC.numeric if c.startswith("nino12_")]
EVALUATION = {"mase": 0.8, "rmse": 150_000.0, "smape": 20.0, "wql": 0.1, "coverage_80": 0.8}
# Non-default margins and thresholds, so the metrics show they come from the config.
MARGINS = {"accuracy_margin": 0.25, "coverage_margin": 0.15}
# Drift over time per origin year: 36 rows a bucket (3 zones x 12 months) must count.
DRIFT = DriftConfig(min_rows=30)


# --- fixtures ---------------------------------------------------------------------------------


def _evaluation_json() -> dict:
    """An ``evaluation.json`` in the shape of ``perucast.export.evaluation_summary``."""
    segments = {"all": {**EVALUATION, "n": 450}}
    for h in range(1, H + 1):
        segments[f"h={h}"] = {**EVALUATION, "mase": 0.5 + 0.1 * h, "n": 75}
    for zone in ("centre", "north", "south"):
        segments[f"zone={zone}"] = {**EVALUATION, "n": 150}
    return {
        "available": True,
        "source": "evaluation/report/metrics.json",
        "evaluated_at": "2026-04-30T12:00:00Z",
        "candidate": "network",
        "context": {"test_period": "2021-05-01 .. 2025-06-01"},
        "goals_passed": True,
        "blessing": {"blessed": True},
        "overall": segments["all"],
        "segments": segments,
        "baselines": {},
    }


@pytest.fixture(scope="module")
def rows(fish_features: Path) -> pd.DataFrame:
    """The training rows of the tiny fish stock features, by origin then zone."""
    frame = read_features(fish_features, SPEC, splits=["train"])
    return frame.sort_values([SPEC.time_column, "zone"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def repo(fish_features: Path, tmp_path_factory) -> Path:
    """Versions 1 and 2 with their monitoring references, 3 pushed before monitoring existed."""
    root = tmp_path_factory.mktemp("monitor-repo") / "models"
    for version in (1, 2):
        extra = root / MODEL / str(version) / "assets.extra"
        extra.mkdir(parents=True)
        shutil.copy(fish_features / "statistics.json", extra / TRAINING_STATISTICS_FILE)
        shutil.copy(fish_features / REFERENCE_SAMPLE_FILE, extra / REFERENCE_SAMPLE_FILE)
        (extra / EVALUATION_FILE).write_text(json.dumps(_evaluation_json()))
    (root / MODEL / "3" / "assets.extra").mkdir(parents=True)
    (root / MODEL / "3" / "assets.extra" / "metadata.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def actuals(fish_tiny: Path, tmp_path_factory) -> Path:
    """A copy of the raw tables with the stock table cut after CUT and the GAP removed."""
    out = tmp_path_factory.mktemp("monitor-actuals") / "raw"
    shutil.copytree(fish_tiny, out)
    stock = read_table(fish_tiny, "stock")
    month = pd.to_datetime(stock["month"])
    gap = (stock["zone"] == GAP[0]) & (month == GAP[1])
    assert gap.sum() == 1
    stock[(month <= CUT) & ~gap].to_parquet(out / "stock.parquet", index=False)
    return out


def _record(frame: pd.DataFrame, version: int, secs: int, p50_factor: float):
    inputs = {
        column: np.array([str(v).encode() for v in frame[column]], dtype=object)
        for column in SPEC.categorical
    }
    for column in SPEC.numeric:
        inputs[column] = frame[column].to_numpy(dtype=np.float32)  # the signature's dtype
    actual = frame[SPEC.target_columns].to_numpy(dtype=np.float64)
    p50 = actual * p50_factor
    outputs = {"p10": p50 - SPREAD * actual, "p50": p50, "p90": p50 + SPREAD * actual}
    outputs = {name: values.astype(np.float32) for name, values in outputs.items()}
    return predict_log_record(MODEL, version, secs, inputs, outputs)


def write_logs(
    prefix: Path,
    frame: pd.DataFrame,
    *,
    version: int = 1,
    start: pd.Timestamp = T0,
    p50_factor: float = 1.0,
    files: int = 2,
) -> Path:
    """Logs ``frame``'s rows as the server would, BATCH rows a request, in ``files`` files.

    Returns:
        ``prefix`` (the logging config's ``filename_prefix``).
    """
    prefix.parent.mkdir(parents=True, exist_ok=True)
    batches = [frame.iloc[i : i + BATCH] for i in range(0, len(frame), BATCH)]
    per_file = -(-len(batches) // files)
    stamp = start.strftime("%Y%m%dT%H%M%SZ")
    for f in range(files):
        path = prefix.parent / f"{prefix.name}-{stamp}-{41 + version}-{f + 1:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in range(f * per_file, min((f + 1) * per_file, len(batches))):
                secs = int(start.timestamp()) + i * RECORD_SECONDS
                writer.write(_record(batches[i], version, secs, p50_factor).SerializeToString())
    return prefix


def shifted(rows: pd.DataFrame, celsius: float = 3.0) -> pd.DataFrame:
    """The rows with every Niño 1+2 input (anomaly and lags) warmer by ``celsius``."""
    return rows.assign(**{c: rows[c] + celsius for c in NINO})


def config(repo: Path, logs: Path, output: Path, **kw) -> MonitorConfig:
    kw.setdefault("drift", DRIFT)
    kw.setdefault("time_freq", "YS")
    return MonitorConfig(
        use_case=MODEL,
        model_repository=repo,
        prediction_logs=logs,
        output_dir=output,
        **{**MARGINS, **kw},
    )


@pytest.fixture(scope="module")
def logs(rows: pd.DataFrame, tmp_path_factory) -> dict[str, Path]:
    """Prefixes of three replays of the training rows: good, ENSO-shifted and bad forecasts."""
    root = tmp_path_factory.mktemp("monitor-logs")
    return {
        "good": write_logs(root / "good" / MODEL, rows),
        "shifted": write_logs(root / "shifted" / MODEL, shifted(rows)),
        "bad": write_logs(root / "bad" / MODEL, rows, p50_factor=3.0),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return response.read().decode()


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory) -> str:
    """A real Pushgateway on a free loopback port (no persistence file): its ``host:port``."""
    if not PUSHGATEWAY.exists():
        pytest.fail(f"{PUSHGATEWAY} is missing: run `make install` (Debian's pushgateway)")
    address = f"127.0.0.1:{_free_port()}"
    log = (tmp_path_factory.mktemp("pushgateway") / "pushgateway.log").open("w")
    process = subprocess.Popen(
        [str(PUSHGATEWAY), f"--web.listen-address={address}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _get(f"http://{address}/-/ready")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Pushgateway did not start on {address} (see {log.name})")
                time.sleep(0.05)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def unshifted(repo, logs, actuals, tmp_path_factory):
    """Good forecasts, no drift, actuals; the push goes to a port nobody listens on."""
    out = tmp_path_factory.mktemp("monitor-out") / "unshifted"
    return monitor(
        config(
            repo, logs["good"], out, actuals_dir=actuals, pushgateway=f"127.0.0.1:{_free_port()}"
        )
    )


@pytest.fixture(scope="module")
def drifted(repo, logs, actuals, pushgateway, tmp_path_factory):
    """Good forecasts of ENSO-shifted inputs, pushed to the real Pushgateway."""
    out = tmp_path_factory.mktemp("monitor-out") / "drifted"
    return monitor(config(repo, logs["shifted"], out, actuals_dir=actuals, pushgateway=pushgateway))


@pytest.fixture(scope="module")
def bad(repo, logs, actuals, tmp_path_factory):
    """P50 three times the actual, inputs unshifted."""
    out = tmp_path_factory.mktemp("monitor-out") / "bad"
    return monitor(config(repo, logs["bad"], out, actuals_dir=actuals))


def _metrics(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _value(samples: list, **labels: str) -> float:
    found = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (labels, samples)
    return found[0]


def placed(rows: pd.DataFrame) -> pd.DataFrame:
    """The replayed rows as realized accuracy places them: by content, one per origin.

    Requests whose target-at-origin and lag inputs repeat in the series (north's biomass was 0
    for months in the 1997-98 El Niño) match each of those periods; the tie goes to the one
    nearest the request time (the latest) and the repeats count once. The prediction made at
    the GAP cannot be placed by content (its actual is absent): it falls back to its request
    time, origin 2026-04, so all its periods are pending.
    """
    content = [*USE_CASE.target_history_inputs]
    out = rows[["zone", SPEC.time_column, *content]].copy()
    out["origin"] = out.groupby(["zone", *content])[SPEC.time_column].transform("max")
    out["at_gap"] = (out["zone"] == GAP[0]) & (out[SPEC.time_column] == GAP[1])
    out.loc[out["at_gap"], "origin"] = pd.Timestamp("2026-04-01")
    return out.drop_duplicates(["zone", "origin"], keep="last")


def expected_states(rows: pd.DataFrame) -> dict[str, int]:
    """Forecast periods by state from the design: after CUT pending, the GAP missing."""
    counts = {"matched": 0, "pending": 0, "missing": 0}
    for zone, origin in placed(rows)[["zone", "origin"]].itertuples(index=False):
        for h in range(1, H + 1):
            target = origin + pd.DateOffset(months=h)
            if target > CUT:
                counts["pending"] += 1
            elif (zone, target) == GAP:
                counts["missing"] += 1
            else:
                counts["matched"] += 1
    return counts


# --- drift and the decision -------------------------------------------------------------------


def test_an_unshifted_replay_flags_nothing_and_does_not_recommend_retraining(unshifted, rows):
    report = unshifted.report
    assert report["version"] == 1 and report["predictions"]["rows"] == len(rows)
    assert report["predictions"]["records"] == -(-len(rows) // BATCH)
    assert report["predictions"]["other_versions"] == {}
    assert [d.feature for d in unshifted.drifts if d.drifted] == []
    # Every served input is measured but the calendar's (month_sin, month_cos, season).
    calendar = {"month_sin", "month_cos", "season"}
    assert set(report["drift"]["calendar_inputs"]) == calendar
    assert {d.feature for d in unshifted.drifts} == set(SPEC.feature_columns) - calendar
    units = {d.feature: d.unit for d in unshifted.drifts}
    assert {f for f, unit in units.items() if unit == "period"} == {
        *NINO,
        "season_quota_tonnes",
        "survey_age_months",
    }
    assert report["drift"]["time_axis"] == "origin"  # a replay: content, not request time
    assert unshifted.retrain is False and report["decision"]["reasons"] == []
    assert [c["fired"] for c in report["decision"]["checks"]] == [False, False, False]
    markdown = (unshifted.output_dir / "report.md").read_text()
    assert "Decision: no retraining needed" in markdown
    assert f"0 of {len(unshifted.drifts)} features drifted" in markdown


def test_enso_shifted_inputs_are_flagged_and_retraining_recommended(drifted, rows):
    flagged = sorted(d.feature for d in drifted.drifts if d.drifted)
    assert flagged == sorted(NINO)
    by_name = {d.feature: d for d in drifted.drifts}
    for column in NINO:
        # One Niño value per month for every zone: tested on the distinct values served.
        d = by_name[column]
        served = np.unique((rows[column] + 3.0).to_numpy(dtype=np.float32))
        assert d.unit == "period" and d.n_periods == len(served)
        assert d.psi >= 0.25 and d.p_value < 0.01 and d.test == "ks_2samp"
        every = (rows[column] + 3.0).to_numpy(dtype=np.float32).astype(np.float64)
        assert d.current_mean == pytest.approx(every.mean(), rel=1e-6)  # over the rows
    assert drifted.retrain is True
    (reason,) = drifted.report["decision"]["reasons"]
    assert reason.startswith(f"{len(NINO)} feature(s) drifted: ")
    assert set(reason.split(": ", 1)[1].split(", ")) == set(NINO)
    drift_check = drifted.report["decision"]["checks"][0]
    assert drift_check == {
        "name": "drift",
        "value": float(len(NINO)),
        "threshold": 1.0,
        "fired": True,
        "note": f"drifted: {', '.join(d.feature for d in drifted.drifts if d.drifted)}",
    }


def test_the_report_files_exist_and_agree(drifted):
    out = drifted.output_dir
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {
        "report.json",
        "report.md",
        "report.html",
        "metrics.prom",
        "drift.csv",
        "drift_over_time.csv",
        "realized_segments.csv",
        "realized_periods.csv",
        "plots/psi_by_feature.png",
        "plots/psi_over_time.png",
        "plots/drift_shares.png",
        "plots/realized_by_period.png",
    }
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    for png in out.glob("plots/*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "report.json").read_text())  # strict JSON: no NaN
    assert report["decision"]["retrain"] is True
    written = {k: v for k, v in drifted.report.items() if k != "seconds"}  # added after
    assert report == json.loads(json.dumps(json_safe(written)))
    assert [f["feature"] for f in report["drift"]["features"] if f["drifted"]] == [
        d.feature for d in drifted.drifts if d.drifted
    ]

    table = pd.read_csv(out / "drift.csv")
    assert len(table) == len(drifted.drifts)
    assert table["drifted"].tolist()[: len(NINO)] == [True] * len(NINO)  # drifted first
    assert not table["drifted"].iloc[len(NINO) :].any()
    assert set(table["feature"].iloc[: len(NINO)]) == set(NINO)
    assert table["psi"].iloc[: len(NINO)].is_monotonic_decreasing
    by_report = {f["feature"]: f for f in report["drift"]["features"]}
    for row in table.to_dict("records"):
        assert row["psi"] == pytest.approx(by_report[row["feature"]]["psi"])
        assert row["status"] == by_report[row["feature"]]["status"]

    over_time = pd.read_csv(out / "drift_over_time.csv")
    # Period inputs have one value per bucket: they are not drawn over time.
    period = set(table.loc[table["unit"] == "period", "feature"])
    assert set(NINO) <= period
    assert set(over_time["feature"]) == set(table["feature"]) - period
    assert over_time["psi"].notna().any()

    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "Decision: RETRAINING RECOMMENDED" in markdown
    assert f"{len(NINO)} of {len(drifted.drifts)} features drifted" in markdown
    for column in NINO:
        assert f"| {column} | numeric |" in markdown and "DRIFTED" in markdown
    for png in ("psi_by_feature", "psi_over_time", "drift_shares", "realized_by_period"):
        assert f"](plots/{png}.png)" in markdown
    assert html.count('src="data:image/png;base64,') == 4 and "plots/" not in html
    assert '<td class="fail">DRIFTED</td>' in html and '<td class="fail">FIRED</td>' in html


def test_no_drifted_feature_means_no_shares_plot_and_top_features_over_time(unshifted):
    out = unshifted.output_dir
    assert not (out / "plots" / "drift_shares.png").exists()
    assert (out / "plots" / "psi_by_feature.png").exists()
    assert (out / "plots" / "psi_over_time.png").exists()
    markdown = (out / "report.md").read_text()
    assert "No feature drifted, so no reference-vs-served share plot." in markdown
    top = [d.feature for d in sorted(unshifted.drifts, key=lambda d: (-d.psi, d.feature))][:5]
    assert f"PSI over time of the top features: {', '.join(top)}" in markdown


# --- realized accuracy ------------------------------------------------------------------------


def test_realized_states_follow_the_actuals(unshifted, rows):
    realized = unshifted.report["realized"]
    states = expected_states(rows)
    assert states["pending"] > H and states["missing"] == H  # the design holds both
    assert realized["states"] == states
    where = placed(rows)
    ties = int(rows.duplicated(["zone", *USE_CASE.target_history_inputs], keep=False).sum())
    assert ties >= 2  # the design holds a tie (else the data changed: revisit `placed`)
    assert realized["resolution"] == {
        "content": len(rows) - 1 - ties,
        "content_tiebreak": ties,
        "timestamp": 1,  # the prediction at the GAP
        "unresolved": 0,
    }
    assert realized["duplicates"] == len(rows) - len(where)
    segments = pd.read_csv(unshifted.output_dir / "realized_segments.csv")
    all_row = segments[segments["segment"] == "all"].iloc[0]
    assert all_row["n"] == states["matched"]
    assert all_row["pending"] == states["pending"] and all_row["missing"] == states["missing"]
    horizons = segments[segments["group"] == "horizon"]
    assert horizons["segment"].tolist() == [f"h={h}" for h in range(1, H + 1)]
    assert horizons["n"].sum() == states["matched"]
    assert horizons["evaluation_mase"].tolist() == pytest.approx(
        [0.5 + 0.1 * h for h in range(1, 7)]
    )
    periods = pd.read_csv(unshifted.output_dir / "realized_periods.csv")
    assert periods["n"].sum() == states["matched"] and periods["pending"].sum() == states["pending"]
    assert pd.to_datetime(periods.loc[periods["n"] > 0, "target_time"]).max() == CUT

    markdown = (unshifted.output_dir / "report.md").read_text()
    assert (
        f"{states['matched']:,} matched (the actual value is in the table: scored), "
        f"{states['pending']:,} pending" in markdown
    )
    assert f"{states['missing']:,} missing" in markdown


def test_good_forecasts_score_as_built_and_do_not_fire(unshifted):
    overall = unshifted.report["realized"]["segments"]["all"]
    assert overall["mase"] == pytest.approx(0.0, abs=1e-4)  # P50 = the actual (float32)
    assert overall["coverage_80"] == 1.0
    # wQL: (2 · 0.1 · 0.15 y + 0 + 2 · 0.1 · 0.15 y) / 3 / y
    assert overall["wql"] == pytest.approx(2 * 2 * 0.1 * SPREAD / 3, rel=1e-4)
    checks = {c["name"]: c for c in unshifted.report["decision"]["checks"]}
    assert checks["accuracy"]["threshold"] == pytest.approx(0.8 * 1.25)
    assert checks["coverage"]["threshold"] == pytest.approx(0.8 - 0.15)
    assert not checks["accuracy"]["fired"] and not checks["coverage"]["fired"]
    assert checks["accuracy"]["note"].startswith("realized 0.000 <= 1.000")


def test_bad_forecasts_fire_accuracy_decay_and_coverage(bad, rows):
    assert [d.feature for d in bad.drifts if d.drifted] == []
    overall = bad.report["realized"]["segments"]["all"]
    assert overall["n"] == expected_states(rows)["matched"]
    # Only the zero-biomass months (P10 = P90 = 0 = the actual) stay covered.
    zeros = (rows[SPEC.target_columns] == 0).to_numpy().sum()
    assert 0 < overall["coverage_80"] <= zeros / overall["n"] and overall["mase"] > 1.0
    checks = {c["name"]: c for c in bad.report["decision"]["checks"]}
    assert checks["accuracy"]["fired"] and checks["coverage"]["fired"]
    assert bad.retrain is True
    reasons = bad.report["decision"]["reasons"]
    assert [r.split(":")[0] for r in reasons] == [
        "realized MASE above the evaluation level",
        "interval coverage below the evaluation level",
    ]
    markdown = (bad.output_dir / "report.md").read_text()
    assert "less accurate than the evaluation promised" in markdown


def test_accuracy_decides_only_with_enough_matched_actuals(bad):
    realized_all = bad.report["realized"]["segments"]["all"]
    n = realized_all["n"]
    evaluation = bad.report["evaluation"]["overall"]
    base = bad.report["config"]
    for needed, fires in ((n, True), (n + 1, False)):
        cfg = MonitorConfig.model_validate({**base, "min_matched_actuals": needed})
        decision = decide(bad.drifts, realized_all, evaluation, cfg)
        assert decision.retrain is fires
        accuracy = decision.checks[1]
        assert accuracy.fired is fires and accuracy.value == pytest.approx(realized_all["mase"])
        if not fires:
            assert accuracy.note == f"{n} forecast periods with actuals, fewer than {n + 1}"


def test_without_actuals_only_drift_is_measured(repo, logs, tmp_path):
    result = monitor(config(repo, logs["shifted"], tmp_path / "out"))
    assert result.report["realized"] is None
    assert result.report["drift"]["time_axis"] == "timestamp"
    assert [c["note"] for c in result.report["decision"]["checks"][1:]] == ["no actuals given"] * 2
    assert result.retrain is True  # drift alone decides
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert "realized_segments.csv" not in files and "realized_periods.csv" not in files
    assert not (tmp_path / "out" / "plots" / "realized_by_period.png").exists()
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "No actuals were given, so realized accuracy was not measured" in markdown
    families = _metrics((tmp_path / "out" / "metrics.prom").read_text())
    assert families[METRIC_PREFIX + "realized_mase"] == []
    assert families[METRIC_PREFIX + "actuals"] == []


# --- metrics and the Pushgateway --------------------------------------------------------------


def test_metrics_file_holds_exactly_the_monitor_metrics(unshifted, drifted):
    for result, drifted_count in ((unshifted, 0), (drifted, len(NINO))):
        families = _metrics((result.output_dir / "metrics.prom").read_text())
        assert set(families) == {METRIC_PREFIX + k for k in MONITOR_METRICS}
        for samples in families.values():
            assert all(s.labels["model"] == MODEL for s in samples)
        m = {k[len(METRIC_PREFIX) :]: v for k, v in families.items()}
        assert _value(m["drifted_features"]) == drifted_count
        assert _value(m["retrain_recommended"]) == int(drifted_count > 0)
        assert _value(m["accuracy_margin"]) == 0.25 and _value(m["coverage_margin"]) == 0.15
        assert _value(m["evaluation_mase"]) == 0.8 and _value(m["evaluation_coverage"]) == 0.8
        assert _value(m["evaluation_quantile_loss"]) == 0.1
        assert _value(m["predictions"]) == result.report["predictions"]["rows"]
        assert _value(m["feature_drifted"], feature="nino12_lag1") == int(drifted_count > 0)
        psi = {d.feature: d.psi for d in result.drifts}
        assert _value(m["feature_psi"], feature="zone") == pytest.approx(psi["zone"])
        assert _value(m["feature_pvalue"], feature="zone", test="chisquare") >= 0
        states = result.report["realized"]["states"]
        for state, count in states.items():
            assert _value(m["actuals"], state=state) == count
        segments = result.report["realized"]["segments"]
        assert _value(m["realized_coverage"], segment="all") == 1.0
        assert _value(m["realized_quantile_loss"], segment="h=3") == pytest.approx(
            segments["h=3"]["wql"]
        )
        assert {s.labels["segment"] for s in m["realized_mase"]} == set(segments)
        assert abs(_value(m["last_run_timestamp_seconds"]) - time.time()) < 600


def test_metrics_are_pushed_to_a_real_pushgateway(drifted, pushgateway):
    assert drifted.report["push"] == {"gateway": pushgateway, "pushed": True, "error": ""}
    families = _metrics(_get(f"http://{pushgateway}/metrics"))
    ours = {k: v for k, v in families.items() if k.startswith(METRIC_PREFIX)}
    assert set(ours) == {METRIC_PREFIX + k for k in MONITOR_METRICS}
    drifted_features = ours[METRIC_PREFIX + "drifted_features"]
    assert _value(drifted_features, job=PUSH_JOB, model=MODEL) == len(NINO)
    assert _value(ours[METRIC_PREFIX + "retrain_recommended"], job=PUSH_JOB, model=MODEL) == 1
    assert (
        _value(
            ours[METRIC_PREFIX + "feature_drifted"],
            job=PUSH_JOB,
            model=MODEL,
            feature="nino12_lag3",
        )
        == 1
    )
    assert (
        _value(ours[METRIC_PREFIX + "actuals"], job=PUSH_JOB, state="pending")
        == (drifted.report["realized"]["states"]["pending"])
    )
    # The gateway records the push itself per group: what PerucastMonitorStale could use.
    assert _value(families["push_failure_time_seconds"], job=PUSH_JOB, model=MODEL) == 0


def test_an_unreachable_pushgateway_leaves_the_step_successful(unshifted):
    push = unshifted.report["push"]
    assert push["pushed"] is False and push["error"]
    assert (unshifted.output_dir / "metrics.prom").exists()
    report = json.loads((unshifted.output_dir / "report.json").read_text())
    assert report["push"]["pushed"] is False
    assert "FAILED" in (unshifted.output_dir / "report.md").read_text()


# --- window and version selection -------------------------------------------------------------


@pytest.fixture(scope="module")
def two_versions(rows: pd.DataFrame, tmp_path_factory) -> Path:
    """Version 1 served 120 rows on one day, version 2 the next 120 rows two days later."""
    prefix = tmp_path_factory.mktemp("monitor-versions") / MODEL
    write_logs(prefix, rows.iloc[:120], version=1, files=1)
    write_logs(prefix, rows.iloc[120:240], version=2, start=T0 + pd.Timedelta(days=2), files=1)
    return prefix


def test_the_newest_version_is_monitored_and_the_other_counted(repo, two_versions, tmp_path):
    result = monitor(config(repo, two_versions, tmp_path / "out"))
    predictions = result.report["predictions"]
    assert result.report["version"] == 2 and predictions["rows"] == 120
    assert predictions["other_versions"] == {"1": 120}
    assert predictions["first"] == (T0 + pd.Timedelta(days=2)).isoformat()
    assert result.report["version_dir"] == str(repo / MODEL / "2")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| other versions in the window (not monitored) | v1: 120 |" in markdown

    chosen = monitor(config(repo, two_versions, tmp_path / "v1", version=1))
    assert chosen.report["version"] == 1 and chosen.report["predictions"]["rows"] == 120
    assert chosen.report["predictions"]["other_versions"] == {"2": 120}


def test_the_window_keeps_only_its_records(repo, two_versions, tmp_path):
    # Version 2's 20 requests run from T0 + 2 days for 200 minutes; the window ends after its
    # last one and is one day long: version 1 is outside.
    result = monitor(config(repo, two_versions, tmp_path / "out", window_days=1))
    assert result.report["predictions"]["other_versions"] == {}
    last = T0 + pd.Timedelta(days=2, seconds=19 * RECORD_SECONDS)
    assert result.report["window"]["end"] == (last + pd.Timedelta(seconds=1)).isoformat()
    # An explicit end an hour into version 2's requests: 6 requests of 6 rows.
    end = T0 + pd.Timedelta(days=2, hours=1)
    result = monitor(config(repo, two_versions, tmp_path / "end", window_days=0.5, window_end=end))
    assert result.report["version"] == 2 and result.report["predictions"]["rows"] == 36
    assert result.report["window"]["start"] == (end - pd.Timedelta(hours=12)).isoformat()


def test_monitor_errors_name_what_is_missing(repo, rows, two_versions, tmp_path):
    with pytest.raises(MonitorError, match="no prediction logs at"):
        monitor(config(repo, tmp_path / "nowhere" / MODEL, tmp_path / "out"))
    with pytest.raises(MonitorError, match="no logged predictions of 'fish_stock' between"):
        monitor(config(repo, two_versions, tmp_path / "out", window_end=T0 - pd.Timedelta(days=1)))
    with pytest.raises(MonitorError, match="version 7 of 'fish_stock' is not in"):
        monitor(config(repo, two_versions, tmp_path / "out", version=7))
    assert not (tmp_path / "out").exists()


# --- the CLI ----------------------------------------------------------------------------------


def _invoke(*args: str):
    app = typer.Typer()
    app.command()(cli)
    return CliRunner().invoke(app, list(args))


def test_cli_prints_the_summary_and_exits_0(repo, logs, actuals, tmp_path):
    out = tmp_path / "report"
    result = _invoke(
        "--use-case", MODEL,
        "--model-repository", str(repo),
        "--prediction-logs", str(logs["bad"]),
        "--actuals", str(actuals),
        "--output", str(out),
        "--min-matched-actuals", "1000000",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    lines = result.stdout.splitlines()
    end = T0 + pd.Timedelta(seconds=(-(-654 // BATCH) - 1) * RECORD_SECONDS + 1)
    start = end - pd.Timedelta(days=28)
    assert lines[0] == (
        f"{MODEL} v1: 654 logged predictions {start.isoformat()[:19]} .. {end.isoformat()[:19]}"
    )
    assert lines[1] == f"  drift: 0 of {len(report['drift']['features'])} features drifted"
    assert lines[2].startswith("  realized: MASE ") and "(evaluation 0.800)" in lines[2]
    assert lines[-1] == "  retrain: no"  # bad, but too few matched actuals to decide
    assert report["decision"]["retrain"] is False
    assert "fewer than 1000000" in report["decision"]["checks"][1]["note"]


def test_cli_exits_3_for_missing_logs_or_references(repo, rows, tmp_path):
    missing = _invoke(
        "--use-case", MODEL,
        "--model-repository", str(repo),
        "--prediction-logs", str(tmp_path / "nowhere" / MODEL),
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert missing.exit_code == 3
    assert f"error: no prediction logs at {tmp_path / 'nowhere' / MODEL}" in missing.stderr

    prefix = write_logs(tmp_path / "v3" / MODEL, rows.iloc[:12], version=3, files=1)
    unreferenced = _invoke(
        "--use-case", MODEL,
        "--model-repository", str(repo),
        "--prediction-logs", str(prefix),
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert unreferenced.exit_code == 3
    assert "error: version 3 has no monitoring references" in unreferenced.stderr
    assert "training_statistics.json is missing" in unreferenced.stderr
    assert not (tmp_path / "out").exists()


def test_the_report_copes_with_nothing_to_show(unshifted, actuals, tmp_path):
    """No features, no drift over time and no forecast that could be placed: text, no plots."""
    from components.monitor_report import write_report
    from perucast.realized import realized_accuracy

    empty = pd.DataFrame(
        {c: pd.Series(dtype=object) for c in ("zone", "p10", "p50", "p90")}
        | {"timestamp": pd.Series(dtype="datetime64[ns, UTC]"), "model_version": []}
    )
    realized = realized_accuracy(empty, read_table(actuals, "stock"), MODEL)
    report = json.loads(json.dumps(json_safe(unshifted.report)))
    report["drift"]["features"] = []
    report["realized"] = realized.to_dict()
    report["predictions"].update(rows=0, records=0, first=None, last=None)
    out = tmp_path / "report"
    out.mkdir()
    write_report(out, report, [], pd.DataFrame(columns=["bucket", "feature", "psi"]), realized)
    assert sorted(p.name for p in out.iterdir()) == [
        "drift.csv",
        "drift_over_time.csv",
        "plots",
        "realized_periods.csv",
        "realized_segments.csv",
        "report.html",
        "report.json",
        "report.md",
    ]
    assert list((out / "plots").iterdir()) == []
    markdown = (out / "report.md").read_text()
    assert "0 of 0 features drifted" in markdown and "0 forecast periods: 0 matched" in markdown
    segments = pd.read_csv(out / "realized_segments.csv")
    assert segments["segment"].tolist() == ["all"] and segments["n"].tolist() == [0]
    assert "| all | – | 0.800 | – | 0.100 | – | 80.0% | 0 | 0 | 0 |" in markdown
    assert "<img" not in (out / "report.html").read_text()
