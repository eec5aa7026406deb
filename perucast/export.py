"""Export a trained forecaster as a SavedModel in TensorFlow Serving's repository layout.

``<model_repository>/<model_name>/<version>/`` holds:

* ``saved_model.pb`` and ``variables/``: the ``serving_default`` signature takes one ``[batch]``
  tensor per raw feature (``string`` keys, ``int64`` codes, ``float32`` values; NaN = missing)
  and returns ``p10``, ``p50`` and ``p90``, each ``[batch, H]`` float32 in the target's units;
* ``assets.extra/metadata.json``: use case, feature spec, parameters, training metrics, data
  and code versions, training time;
* ``assets.extra/tf_serving_warmup_requests``: a few real Predict requests (``PredictionLog``
  TFRecords) that TensorFlow Serving replays before it marks the version AVAILABLE.

The push step adds the version's monitoring references to ``assets.extra/`` before it publishes
(``load_monitoring_references`` reads them back):

* ``training_statistics.json``: the feature dataset's ``statistics.json`` it was trained on;
* ``reference_sample.parquet``: sampled training rows of the feature columns (when the feature
  dataset has one);
* ``evaluation.json``: its evaluation-time accuracy (``evaluation_summary``), in the segments
  and metric names of realized accuracy (``perucast.realized``), so the two compare key by key.

A version directory appears complete or not at all: everything is written into a hidden
sibling (``.<version>.tmp-*``, which a model server's version scan ignores because it is not a
number) and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import FeatureSpec

if TYPE_CHECKING:
    import pandas as pd
from perucast.quantiles import QUANTILE_COLUMNS

SIGNATURE = "serving_default"
METADATA_FILE = "metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"
# Monitoring references in assets.extra/ (written by the push step).
TRAINING_STATISTICS_FILE = "training_statistics.json"
REFERENCE_SAMPLE_FILE = "reference_sample.parquet"
EVALUATION_FILE = "evaluation.json"
# Where the evaluate step keeps every score, and its flat headline (older or partial outputs).
EVALUATION_SCORES = ("report/metrics.json", "metrics.json")
_VERSION = re.compile(r"^\d+$")


def versions(model_dir: Path | str) -> list[int]:
    """The numeric version directories under ``model_dir``, ascending (none: ``[]``)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and _VERSION.match(p.name))


def serving_function(model, spec: FeatureSpec, dtypes: Mapping[str, str]):
    """The ``serving_default`` function: named ``[batch]`` raw inputs -> p10/p50/p90."""
    import tensorflow as tf

    signature = {
        name: tf.TensorSpec([None], tf.as_dtype(dtype), name=name) for name, dtype in dtypes.items()
    }

    @tf.function(input_signature=[signature])
    def serve(features):
        quantiles = model(features, training=False)
        return {name: quantiles[:, :, i] for i, name in enumerate(QUANTILE_COLUMNS)}

    return serve


def code_revision(repo: Path | str | None = None) -> str:
    """The git commit of the code (``+dirty`` with uncommitted changes), or ``$PERUCAST_REVISION``.

    Images built without ``.git`` set ``PERUCAST_REVISION`` at build time.
    """
    env = os.environ.get("PERUCAST_REVISION")
    if env:
        return env
    cwd = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}+dirty" if dirty else rev


def data_version(features_dir: Path | str) -> dict[str, str]:
    """A fingerprint of the feature dataset: MD5 of its split and statistics files, and the
    raw data directory its preprocessing read (from ``report.json``)."""
    features_dir = Path(features_dir)
    digest = hashlib.md5()
    for name in ("split.json", "statistics.json"):
        path = features_dir / name
        if path.exists():
            digest.update(path.read_bytes())
    out = {"features_dir": str(features_dir), "features_md5": digest.hexdigest()}
    report = features_dir / "report.json"
    if report.exists():
        source = json.loads(report.read_text()).get("input_dir")
        if source:
            out["input_dir"] = str(source)
    return out


def _warmup_records(
    path: Path, model_name: str, examples: Mapping[str, np.ndarray], dtypes: Mapping[str, str]
) -> int:
    """Write Predict requests for up to 3 example rows as ``PredictionLog`` TFRecords."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    rows = min(3, len(next(iter(examples.values()))))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(rows):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE)
            )
            for name, dtype in dtypes.items():
                value = np.asarray(examples[name][i : i + 1])
                if dtype == "string":
                    proto = tf.make_tensor_proto([str(v).encode() for v in value], tf.string)
                else:
                    proto = tf.make_tensor_proto(value.astype(dtype))
                request.inputs[name].CopyFrom(proto)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return rows


def export_model(
    model,
    spec: FeatureSpec,
    dtypes: Mapping[str, str],
    model_repository: Path | str,
    model_name: str,
    metadata: Mapping[str, Any],
    *,
    version: int | None = None,
    warmup_examples: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write the model as ``<model_repository>/<model_name>/<version>/``, atomically.

    Args:
        model: The trained Keras model (dict of raw inputs -> ``[batch, H, 3]``).
        spec: The feature spec (for the metadata and the output width).
        dtypes: Input name -> dtype name (``models.network.input_dtypes``).
        model_repository: The repository root.
        model_name: The model's directory name (what clients put in ``ModelSpec.name``).
        metadata: JSON-able facts stored in ``assets.extra/metadata.json``.
        version: The version number; None takes one more than the highest present (1 first).
        warmup_examples: Raw input columns of a few rows for the warm-up requests.

    Returns:
        The version directory.

    Raises:
        FileExistsError: when ``version`` is given and already exists (versions are immutable).
    """
    import tensorflow as tf

    model_dir = Path(model_repository) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export.tmp-", dir=model_dir))
    try:
        serve = serving_function(model, spec, dtypes)
        tf.saved_model.save(model, str(tmp), signatures={SIGNATURE: serve})
        extra = tmp / "assets.extra"
        extra.mkdir()
        if warmup_examples is not None:
            _warmup_records(extra / WARMUP_FILE, model_name, warmup_examples, dtypes)
        payload = {
            "model_name": model_name,
            "signature": SIGNATURE,
            "inputs": dict(dtypes),
            "outputs": {name: [None, spec.horizon] for name in QUANTILE_COLUMNS},
            "feature_spec": {
                "time_column": spec.time_column,
                "series_keys": list(spec.series_keys),
                "period": spec.period,
                "horizon": spec.horizon,
                "target": spec.target,
            },
            **metadata,
        }
        (extra / METADATA_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        return _publish(tmp, model_dir, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, model_dir: Path, version: int | None) -> Path:
    """Rename the finished export to its version number (the next free one if None)."""
    os.chmod(tmp, 0o755)  # mkdtemp's 0700: servers running as another user must read it
    if version is not None:
        target = model_dir / str(version)
        if target.exists():
            raise FileExistsError(f"model version {target} already exists (versions are immutable)")
        os.rename(tmp, target)
        return target
    for _ in range(100):
        target = model_dir / str(max(versions(model_dir), default=0) + 1)
        try:
            # rename onto an existing non-empty directory fails: a concurrent export took it.
            os.rename(tmp, target)
            return target
        except OSError:
            continue
    raise RuntimeError(f"could not find a free version number under {model_dir}")


def read_metadata(version_dir: Path | str) -> dict[str, Any]:
    """The ``assets.extra/metadata.json`` of an exported version."""
    return json.loads((Path(version_dir) / "assets.extra" / METADATA_FILE).read_text())


def load_serving(version_dir: Path | str):
    """Load an exported version and return its ``serving_default`` function."""
    import tensorflow as tf

    return tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]


# --- monitoring references ----------------------------------------------------------------------


def evaluation_summary(evaluation_dir: Path | str, candidate: str = "network") -> dict[str, Any]:
    """The evaluation-time accuracy of ``candidate``, as ``assets.extra/evaluation.json`` holds it.

    Read from the evaluate step's ``report/metrics.json`` (every score), else from its flat
    ``metrics.json`` (overall headline only). Segments are named as in ``perucast.realized``:
    ``"all"``, ``"h=1"`` .. ``"h=H"``, ``"<series key>=<value>"``; each holds the evaluation's
    metrics (``mase``, ``rmse``, ``smape``, ``wql``, ``coverage_80``, ``n``; None for NaN).

    Returns:
        ``available`` (False when neither file has scores of ``candidate``; then ``reason``
        says why and the metric fields are empty), ``source`` (the file read), ``evaluated_at``
        (its modification time, UTC ISO 8601: the evaluation writes no timestamp of its own),
        ``candidate``, ``context`` (test period, origins, horizon, ... as the evaluation
        recorded them), ``goals_passed``, ``blessing``, ``overall`` (the ``"all"`` metrics),
        ``segments`` and ``baselines`` (overall metrics of the other models evaluated).

    Raises:
        ValueError: A scores file exists but is not JSON.
    """
    from perucast.realized import segment_label

    evaluation_dir = Path(evaluation_dir)
    for name in EVALUATION_SCORES:
        path = evaluation_dir / name
        if not path.is_file():
            continue
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not JSON: {err}") from None
        # report/metrics.json nests scores per model; the flat file holds overall values only.
        scores = payload.get("scores") if "scores" in payload else _flat_scores(payload)
        if not isinstance(scores, dict) or not isinstance(scores.get(candidate), dict):
            continue
        segments: dict[str, dict[str, Any]] = {}
        for group, values in scores[candidate].items():
            if group == "overall":
                segments[segment_label("all", None)] = values
            elif isinstance(values, dict):
                for value, metrics in values.items():
                    segments[segment_label(group, value)] = metrics
        mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        return {
            "available": True,
            "source": str(path),
            "evaluated_at": mtime.isoformat().replace("+00:00", "Z"),
            "candidate": candidate,
            "context": payload.get("context", {}),
            "goals_passed": payload.get("goals_passed"),
            "blessing": payload.get("blessing"),
            "overall": segments.get("all"),
            "segments": segments,
            "baselines": {
                m: v.get("overall") for m, v in scores.items() if m != candidate and "overall" in v
            },
        }
    return {
        "available": False,
        "reason": f"no scores of {candidate!r} in {evaluation_dir} "
        f"({' or '.join(EVALUATION_SCORES)})",
        "source": None,
        "evaluated_at": None,
        "candidate": candidate,
        "context": {},
        "overall": None,
        "segments": {},
        "baselines": {},
    }


def _flat_scores(payload: dict[str, Any]) -> dict[str, Any]:
    """``{model: {"overall": metrics}}`` from the evaluate step's flat ``metrics.json``."""
    return {m: {"overall": v} for m, v in payload.items() if isinstance(v, dict) and "mase" in v}


def monitoring_assets(
    features_dir: Path | str, evaluation_dir: Path | str, candidate: str = "network"
) -> dict[str, Path | bytes]:
    """What the push step adds to a version's ``assets.extra/``: file name -> source or bytes.

    Raises:
        FileNotFoundError: The feature dataset has no ``statistics.json``.
        ValueError: The evaluation's scores file is not JSON.
    """
    features_dir = Path(features_dir)
    statistics = features_dir / "statistics.json"
    if not statistics.is_file():
        raise FileNotFoundError(f"{features_dir} is not a feature dataset (no statistics.json)")
    assets: dict[str, Path | bytes] = {TRAINING_STATISTICS_FILE: statistics}
    sample = features_dir / REFERENCE_SAMPLE_FILE
    if sample.is_file():
        assets[REFERENCE_SAMPLE_FILE] = sample
    summary = evaluation_summary(evaluation_dir, candidate)
    assets[EVALUATION_FILE] = (json.dumps(summary, indent=2, default=str) + "\n").encode()
    return assets


@dataclass(frozen=True)
class MonitoringReferences:
    """What a published version carries for monitoring it.

    Attributes:
        version_dir: The version directory.
        training_statistics: The training feature dataset's ``statistics.json``.
        evaluation: Its evaluation-time accuracy (``evaluation_summary``).
        reference_sample: Sampled training rows of the feature columns, or None when the
            version was pushed without one.
    """

    version_dir: Path
    training_statistics: dict[str, Any]
    evaluation: dict[str, Any]
    reference_sample: pd.DataFrame | None = None


def load_monitoring_references(version_dir: Path | str) -> MonitoringReferences:
    """The monitoring references in ``<version_dir>/assets.extra/``.

    Raises:
        FileNotFoundError: ``training_statistics.json`` or ``evaluation.json`` is missing (a
            version pushed before the push step added them), naming the file.
    """
    extra = Path(version_dir) / "assets.extra"
    loaded = {}
    for name in (TRAINING_STATISTICS_FILE, EVALUATION_FILE):
        path = extra / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {version_dir} was not published with its monitoring "
                "references (push it again with the current push step)"
            )
        loaded[name] = json.loads(path.read_text())
    sample = None
    if (extra / REFERENCE_SAMPLE_FILE).is_file():
        import pandas as pd

        sample = pd.read_parquet(extra / REFERENCE_SAMPLE_FILE)
    return MonitoringReferences(
        version_dir=Path(version_dir),
        training_statistics=loaded[TRAINING_STATISTICS_FILE],
        evaluation=loaded[EVALUATION_FILE],
        reference_sample=sample,
    )
