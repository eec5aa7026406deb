"""Deploy step: roll a pushed model version out to the serving fleet with version labels.

The push step copies a blessed model into the model repository as ``<repo>/<name>/<N>``. This
step makes the servers serve it, the way TensorFlow Serving users do it with a
``ModelServerConfig`` and version labels, and undoes everything when a check fails:

1. **Read** the serving config (a ``ModelServerConfig`` text proto): a file that a running
   ``perucast-model-server --model_config_file=F --model_config_file_poll_wait_seconds=S``
   polls (``mode="local"``), or one key of a ConfigMap that the official TF Serving pods mount
   and poll (``mode="kubernetes"``, read and patched with the official ``kubernetes`` client).
   The previous version is the model's ``stable`` label, else the highest version of its
   ``specific`` policy, else none (first deploy).
2. **Load**: ``specific {versions: prev versions: new}``, labels ``stable: prev``. TF Serving
   accepts a label only on a version that is already AVAILABLE, so the canary label waits for
   the next write. Waits until GetModelStatus shows the new version AVAILABLE (a version that
   ends with a load error fails the deploy with that error).
3. **Canary**: adds ``canary: new``; waits until the ``canary`` label resolves to it.
4. **Smoke check** through the ``canary`` label: a few real Predict requests (rows of the test
   split of a feature dataset, a given request, or the version's own warm-up requests) must
   succeed with finite ``[rows, H]`` outputs and non-crossing quantiles (p10 <= p50 <= p90).
   The check is a pluggable callable (`SmokeCheck`); `default_smoke_check` is the real one.
5. **Promote**: labels ``stable: new`` and ``previous: prev`` (kept loaded for a fast manual
   rollback); waits until ``stable`` resolves to the new version.
6. **Roll back** on any failure after the first write: the original config text is restored
   exactly, the step waits (bounded, best effort) until the previous stable version serves
   again, and `DeployError` is raised (the CLI exits non-zero).

Every wait goes through the official ``ModelService.GetModelStatus`` stub of each serving
target (give one ``host:port`` per replica, comma-separated, to check every pod of a fleet:
through a ClusterIP Service each call reaches one pod only).

Writes are safe against the server and against other writers:

* a local file is replaced atomically (temporary file in the same directory, fsync,
  ``os.replace``), so a polling server never reads half a file; a ConfigMap is patched with its
  ``resourceVersion`` as a precondition (a concurrent change gives 409 Conflict, never a lost
  update);
* each write re-reads the config and changes only this model's entry, so two deploys of
  different models into one config (e.g. the crop and fish pipelines) do not undo each other;
  the rollback restores the original text byte for byte unless someone else changed the config
  meanwhile, in which case only this model's entry is restored.
* TF Serving refuses a whole config when one of its labels names a version that is not
  AVAILABLE. When the original config labels a version that the deploy unloaded (e.g.
  ``previous: 1`` after deploying 3 over ``{1, 2}``), the rollback first writes the original
  config without those labels, waits for the versions to load, then writes the original.

A report (``deploy.json``, ``deploy.md``: previous and new version, each phase with seconds,
the smoke figures, rolled back or not) goes to ``report_dir`` when given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import USE_CASE_NAMES, UseCaseName

if TYPE_CHECKING:
    import pandas as pd
    from tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger("perucast.deploy")

__all__ = [
    "CANARY",
    "PREVIOUS",
    "STABLE",
    "DeployConfig",
    "DeployError",
    "DeployResult",
    "SmokeCheck",
    "SmokeCheckError",
    "SmokeContext",
    "cli",
    "default_smoke_check",
    "deploy",
]

STABLE, CANARY, PREVIOUS = "stable", "canary", "previous"
MANAGED_LABELS = (STABLE, CANARY, PREVIOUS)
AVAILABLE, END = 30, 50  # tensorflow.serving.ModelVersionStatus.State
TENSORFLOW_PLATFORM = "tensorflow"
SMOKE_REQUESTS = 4  # the smoke rows are sent in up to this many Predict requests
_WRITE_ATTEMPTS = 5  # re-reads after a concurrent change of the config


class DeployError(RuntimeError):
    """The deploy failed; the config was rolled back when anything had been written.

    Attributes:
        result: What happened (phases, smoke figures, rollback), also in the report.
    """

    def __init__(self, message: str, result: DeployResult | None = None):
        super().__init__(message)
        self.result = result


class SmokeCheckError(RuntimeError):
    """The smoke check found a problem.

    Attributes:
        figures: What it measured before it stopped (shown in the report).
    """

    def __init__(self, message: str, figures: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.figures = dict(figures or {})


class _ConfigConflict(RuntimeError):
    """Someone else changed the serving config between our read and our write."""


# --- configuration ----------------------------------------------------------------------------


class DeployConfig(BaseModel):
    """Configuration of the deploy step (validated when a pipeline is built)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    model_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]+$", description="Default: the use case's name."
    )
    version: int = Field(ge=1, description="The version push wrote: <repo>/<name>/<version>.")
    model_repository: Path = Field(
        description="Repository root as the servers see it (base_path of a new model entry)."
    )
    mode: Literal["local", "kubernetes"] = "local"
    config_file: Path | None = Field(
        default=None, description="local: the --model_config_file the server polls."
    )
    namespace: str | None = Field(default=None, description="kubernetes: the ConfigMap's.")
    configmap: str | None = Field(default=None, description="kubernetes: the ConfigMap name.")
    configmap_key: str = Field(default="models.config", min_length=1)
    kube_api_host: str | None = Field(
        default=None,
        description="kubernetes: API server URL used without credentials (e.g. `kubectl proxy` "
        "at http://127.0.0.1:8001); default: in-cluster config, else ~/.kube/config.",
    )
    serving_target: str = Field(
        min_length=1,
        description="gRPC host:port of the server or Service; comma-separated for one per pod.",
    )
    features_dir: Path | None = Field(
        default=None, description="Feature dataset whose test rows the smoke check sends."
    )
    smoke_request: Path | None = Field(
        default=None,
        description="JSON rows for the smoke check: REST predict body ({'instances': [...]} "
        "or {'inputs': {...}}) or {column: [values]}.",
    )
    smoke_samples: int = Field(default=16, ge=1, le=10_000)
    timeout_s: float = Field(default=300.0, gt=0, description="Limit of each wait.")
    poll_interval_s: float = Field(default=1.0, gt=0)
    report_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.model_name or self.use_case

    @property
    def targets(self) -> list[str]:
        return [t.strip() for t in self.serving_target.split(",") if t.strip()]

    @model_validator(mode="after")
    def _check_mode(self) -> DeployConfig:
        if self.mode == "local":
            if self.config_file is None:
                raise ValueError("mode 'local' needs config_file (the server's config file)")
            extra = [n for n in ("namespace", "configmap", "kube_api_host") if getattr(self, n)]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to mode 'kubernetes'")
        else:
            missing = [n for n in ("namespace", "configmap") if not getattr(self, n)]
            if missing:
                raise ValueError(f"mode 'kubernetes' needs {' and '.join(missing)}")
            if self.config_file is not None:
                raise ValueError("config_file only applies to mode 'local'")
        if not self.targets:
            raise ValueError("serving_target names no host:port")
        if self.features_dir is not None and self.smoke_request is not None:
            raise ValueError("give features_dir or smoke_request for the smoke rows, not both")
        if self.poll_interval_s > self.timeout_s:
            raise ValueError("poll_interval_s must not exceed timeout_s")
        return self

    def source(self) -> str:
        """Where the serving config lives, for messages."""
        if self.mode == "local":
            return str(self.config_file)
        return f"configmap {self.namespace}/{self.configmap}[{self.configmap_key}]"


# --- result -----------------------------------------------------------------------------------


@dataclass
class DeployResult:
    """What the deploy did.

    Attributes:
        status: ``deployed``; ``unchanged`` (the version already was ``stable``);
            ``rolled_back`` (a check failed, the original config is back);
            ``rollback_failed`` (a check failed and the original config could not be restored
            or the previous version did not serve again within the limit); ``failed`` (nothing
            was written).
        phases: One dict per phase: ``phase``, ``seconds``, ``ok``, ``detail``.
        smoke: The smoke check's figures, one dict per serving target.
    """

    model_name: str
    version: int
    previous: int | None
    mode: str
    config_source: str
    targets: list[str]
    status: str = "failed"
    error: str | None = None
    rolled_back: bool = False
    rollback_verified: bool | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)
    smoke: list[dict[str, Any]] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- smoke check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeContext:
    """What a smoke check gets for one serving target.

    Attributes:
        target: gRPC ``host:port``.
        model_name: The model name.
        use_case: The use case.
        label: The version label to send requests through (``canary``).
        version: The version the label must resolve to.
        horizon: Periods each forecast must cover (None: as the signature declares).
        features: Feature rows to send (None when there is no source of rows).
        timeout_s: Deadline of each request.
    """

    target: str
    model_name: str
    use_case: str
    label: str
    version: int
    horizon: int | None
    features: pd.DataFrame | None
    timeout_s: float


# A smoke check returns its figures, or raises (any exception fails the deploy).
SmokeCheck = Callable[[SmokeContext], Mapping[str, Any]]


def default_smoke_check(ctx: SmokeContext) -> dict[str, Any]:
    """Real Predict requests through ``ctx.label``: outputs must be sane forecasts.

    The rows go in up to `SMOKE_REQUESTS` requests with `serving.client.ForecastClient`
    (the client every service uses). Every response must come from ``ctx.version``, hold p10,
    p50 and p90 of shape ``[rows, H]``, be finite, and keep p10 <= p50 <= p90.

    Returns:
        Figures: requests, rows, horizon, latency (ms), p50 range, served version.

    Raises:
        SmokeCheckError: A request failed or an answer broke a rule (with the figures so far).
    """
    import numpy as np

    from serving.client import QUANTILES, ForecastClient, ServingClientError

    if ctx.features is None or len(ctx.features) == 0:
        raise SmokeCheckError("no feature rows for the smoke check")
    figures: dict[str, Any] = {
        "target": ctx.target,
        "label": ctx.label,
        "requests": 0,
        "rows": 0,
        "latency_ms": [],
    }
    parts = np.array_split(np.arange(len(ctx.features)), min(SMOKE_REQUESTS, len(ctx.features)))
    p50_min, p50_max = math.inf, -math.inf
    with ForecastClient(
        ctx.target,
        model_name=ctx.model_name,
        use_case=ctx.use_case,
        label=ctx.label,
        timeout_s=ctx.timeout_s,
        retries=2,
    ) as client:
        for index in parts:
            batch = ctx.features.iloc[index]
            started = time.perf_counter()
            try:
                forecast = client.predict(batch, ignore_extra=True)
            except (ServingClientError, ValueError) as err:
                raise SmokeCheckError(
                    f"Predict through label {ctx.label!r} failed: {err}", figures
                ) from err
            figures["latency_ms"].append(round((time.perf_counter() - started) * 1e3, 2))
            figures["requests"] += 1
            figures["rows"] += len(batch)
            served = forecast.model_spec.version
            figures["served_version"] = served
            if served != ctx.version:
                raise SmokeCheckError(
                    f"label {ctx.label!r} served version {served}, expected {ctx.version}", figures
                )
            arrays = {q: np.asarray(getattr(forecast, q), dtype=np.float64) for q in QUANTILES}
            horizon = ctx.horizon or arrays["p50"].shape[-1]
            figures["horizon"] = horizon
            for q, values in arrays.items():
                if values.shape != (len(batch), horizon):
                    raise SmokeCheckError(
                        f"output {q} has shape {list(values.shape)}, expected "
                        f"[{len(batch)}, {horizon}]",
                        figures,
                    )
                bad = int((~np.isfinite(values)).sum())
                if bad:
                    raise SmokeCheckError(f"output {q} has {bad} non-finite values", figures)
            p10, p50, p90 = arrays["p10"], arrays["p50"], arrays["p90"]
            tol = 1e-6 * np.maximum(1.0, np.abs(p50))
            crossing = int(((p10 > p50 + tol) | (p50 > p90 + tol)).sum())
            if crossing:
                raise SmokeCheckError(
                    f"{crossing} forecasts have crossing quantiles (p10 <= p50 <= p90 broken)",
                    figures,
                )
            p50_min, p50_max = min(p50_min, float(p50.min())), max(p50_max, float(p50.max()))
    figures["p50_min"], figures["p50_max"] = p50_min, p50_max
    return figures


def _smoke_rows(config: DeployConfig, version_dir: Path | None) -> pd.DataFrame | None:
    """The rows the smoke check sends: test rows, the given request, or the warm-up requests."""
    import pandas as pd

    if config.features_dir is not None:
        from models import get_use_case
        from perucast.datasets import read_features

        features_dir = Path(config.features_dir)
        split = features_dir / "split.json"
        if not split.exists():
            raise FileNotFoundError(f"{features_dir} is not a feature dataset (no split.json)")
        horizon = int(json.loads(split.read_text())["horizon"])
        spec = get_use_case(config.use_case).feature_spec(horizon)
        rows = read_features(features_dir, spec, splits=["test"])
        rows = rows.sort_values([spec.time_column, *spec.series_keys]).reset_index(drop=True)
        if len(rows) > config.smoke_samples:  # evenly spread over time and series
            picks = sorted(
                {
                    round(i * (len(rows) - 1) / (config.smoke_samples - 1 or 1))
                    for i in range(config.smoke_samples)
                }
            )
            rows = rows.iloc[picks].reset_index(drop=True)
        return rows
    if config.smoke_request is not None:
        body = json.loads(Path(config.smoke_request).read_text())
        if isinstance(body, dict) and "instances" in body:
            return pd.DataFrame(body["instances"]).head(config.smoke_samples)
        columns = body.get("inputs", body) if isinstance(body, dict) else None
        if not isinstance(columns, dict):
            raise ValueError(
                f"{config.smoke_request}: expected {{'instances': [...]}}, {{'inputs': {{...}}}} "
                "or {column: [values]}"
            )
        return pd.DataFrame(columns).head(config.smoke_samples)
    if version_dir is not None:
        return _warmup_rows(version_dir, config.smoke_samples)
    return None


def _warmup_rows(version_dir: Path, limit: int) -> pd.DataFrame | None:
    """The inputs of the version's warm-up Predict requests as rows (None: no warm-up file)."""
    import pandas as pd

    from perucast.export import WARMUP_FILE

    path = version_dir / "assets.extra" / WARMUP_FILE
    if not path.is_file():
        return None
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.client import tensor_to_array

    frames = []
    for record in tf.data.TFRecordDataset(str(path)):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            continue
        columns = {}
        for name, proto in entry.predict_log.request.inputs.items():
            values = tensor_to_array(proto).reshape(-1)
            if values.dtype == object:
                values = [v.decode() if isinstance(v, bytes) else v for v in values]
            columns[name] = values
        frames.append(pd.DataFrame(columns))
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True).head(limit)


def _expected_horizon(config: DeployConfig, version_dir: Path | None) -> int | None:
    """H from the version's metadata, else from the feature dataset, else None."""
    if version_dir is not None:
        with contextlib.suppress(OSError, KeyError, ValueError):
            from perucast.export import read_metadata

            return int(read_metadata(version_dir)["feature_spec"]["horizon"])
    if config.features_dir is not None:
        with contextlib.suppress(OSError, KeyError, ValueError):
            return int(
                json.loads((Path(config.features_dir) / "split.json").read_text())["horizon"]
            )
    return None


# --- where the serving config lives -----------------------------------------------------------


class _FileStore:
    """The config file a local server polls. The token of a read is the text itself."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> tuple[str | None, Any]:
        try:
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"serving config file {self.path} does not exist") from None
        return text, text

    def write(self, text: str, token: Any) -> Any:
        """Replaces the file atomically unless it changed since the read that gave ``token``."""
        current, _ = self.read()
        if current != token:
            raise _ConfigConflict(f"{self.path} changed since it was read")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(OSError):
                os.chmod(tmp, self.path.stat().st_mode & 0o7777)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return text

    def close(self) -> None:
        pass


class _ConfigMapStore:
    """One key of a ConfigMap; the token of a read is the ConfigMap's resourceVersion."""

    def __init__(self, api, namespace: str, name: str, key: str, owned_client=None):
        self.api = api
        self.namespace, self.name, self.key = namespace, name, key
        self._owned_client = owned_client

    def _fail(self, err, doing: str) -> Exception:
        where = f"configmap {self.namespace}/{self.name}"
        if err.status == 404:
            return FileNotFoundError(f"{where} not found (namespace {self.namespace})")
        if err.status == 409:
            return _ConfigConflict(f"{where} changed since it was read")
        reason = err.reason or ""
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            reason = json.loads(err.body).get("message", reason)
        return DeployError(f"{doing} {where} failed: HTTP {err.status}: {reason}")

    def read(self) -> tuple[str | None, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            configmap = self.api.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as err:
            raise self._fail(err, "reading") from None
        return (configmap.data or {}).get(self.key), configmap.metadata.resource_version

    def write(self, text: str | None, token: Any) -> Any:
        """Patches the key, with ``token`` (resourceVersion) as the precondition."""
        from kubernetes.client.exceptions import ApiException

        body = {"metadata": {"resourceVersion": token}, "data": {self.key: text}}
        try:
            configmap = self.api.patch_namespaced_config_map(self.name, self.namespace, body)
        except ApiException as err:
            raise self._fail(err, "patching") from None
        return configmap.metadata.resource_version

    def close(self) -> None:
        if self._owned_client is not None:
            self._owned_client.close()


def _kubernetes_api(config: DeployConfig):
    """A CoreV1Api: kube_api_host without credentials, else in-cluster, else kubeconfig."""
    from kubernetes import client
    from kubernetes import config as kube_config

    if config.kube_api_host:
        api_client = client.ApiClient(client.Configuration(host=config.kube_api_host))
    else:
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
        api_client = client.ApiClient()
    return client.CoreV1Api(api_client), api_client


# --- ModelServerConfig helpers ----------------------------------------------------------------


def _parse(text: str | None, source: str) -> model_server_config_pb2.ModelServerConfig:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text or "", config)
    except text_format.ParseError as err:
        raise DeployError(f"{source} is not a ModelServerConfig text proto: {err}") from None
    if config.WhichOneof("config") == "custom_model_config":
        raise DeployError(f"{source} uses custom_model_config: list the models instead")
    return config


def _render(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def _find(config, name: str):
    """(index, entry) of model ``name`` in the config, or (None, None)."""
    for index, entry in enumerate(config.model_config_list.config):
        if entry.name == name:
            return index, entry
    return None, None


def _with_entry(config, name: str, entry) -> Any:
    """A copy of ``config`` whose entry for ``name`` is ``entry`` (None: removed)."""
    from tensorflow_serving.config import model_server_config_pb2

    out = model_server_config_pb2.ModelServerConfig()
    out.CopyFrom(config)
    index, _ = _find(out, name)
    entries = out.model_config_list.config
    if index is not None:
        if entry is None:
            del entries[index]
        else:
            entries[index].CopyFrom(entry)
    elif entry is not None:
        entries.add().CopyFrom(entry)
    return out


def _entry_with(base, versions: list[int], labels: dict[str, int]):
    """``base`` with ``specific {versions}`` and the managed labels set to ``labels``.

    Labels other than stable/canary/previous are kept when their version stays loaded.
    """
    from tensorflow_serving.config import model_server_config_pb2

    entry = model_server_config_pb2.ModelConfig()
    entry.CopyFrom(base)
    wanted = sorted(set(versions))
    others = {
        k: v for k, v in base.version_labels.items() if k not in MANAGED_LABELS and v in wanted
    }
    dropped = sorted(set(base.version_labels) - set(MANAGED_LABELS) - set(others))
    if dropped:
        log.warning("dropping labels %s of %s: their versions are not kept", dropped, base.name)
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.extend(wanted)
    entry.version_labels.clear()
    for key, value in {**others, **labels}.items():
        entry.version_labels[key] = value
    return entry


def _previous_version(entry) -> int | None:
    if entry is None:
        return None
    if STABLE in entry.version_labels:
        return int(entry.version_labels[STABLE])
    policy = entry.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific" and policy.specific.versions:
        return int(max(policy.specific.versions))
    return None


# --- the deploy -------------------------------------------------------------------------------


class _Deployment:
    """One run of the deploy: the store, what was written, the phases."""

    def __init__(self, config: DeployConfig, store, result: DeployResult):
        self.config = config
        self.store = store
        self.result = result
        self.name = config.name
        self.original_text: str | None = None
        self.original_entry = None
        self.last_text: str | None = None  # what we wrote last
        self.expected_entry = None  # our model's entry as we left it
        self.unconfirmed: list[Any] = []  # entries of writes that failed (they may have landed)
        self.written = False

    # --- phases ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str):
        record: dict[str, Any] = {"phase": name, "seconds": 0.0, "ok": False, "detail": ""}
        self.result.phases.append(record)
        started = time.perf_counter()
        log.info("%s: %s ...", self.name, name)
        try:
            yield record
            record["ok"] = True
        except BaseException as err:
            record["detail"] = record["detail"] or str(err)
            raise
        finally:
            record["seconds"] = round(time.perf_counter() - started, 3)
            log.info(
                "%s: %s %s in %.1f s%s",
                self.name,
                name,
                "done" if record["ok"] else "FAILED",
                record["seconds"],
                f" ({record['detail']})" if record["detail"] else "",
            )

    # --- config writes -----------------------------------------------------------------------

    def owns(self, entry) -> bool:
        """Whether our model's entry is as this deploy left it (nobody else changed it)."""
        return entry == self.expected_entry or any(entry == e for e in self.unconfirmed)

    def update(self, transform: Callable[[str | None], str | None], entry) -> str | None:
        """Read, transform, write; again from a fresh read when someone else wrote meanwhile.

        ``entry`` is our model's entry in the new text (None: absent).
        """
        for attempt in range(_WRITE_ATTEMPTS):
            text, token = self.store.read()
            new_text = transform(text)
            self.written = True  # from here on a failure may have changed the config
            try:
                self.store.write(new_text, token)
            except _ConfigConflict as err:
                log.warning("%s (attempt %d): reading it again", err, attempt + 1)
                continue
            except BaseException:
                self.unconfirmed.append(entry)
                raise
            self.last_text = new_text
            self.expected_entry = entry
            return new_text
        raise DeployError(f"{self.config.source()} kept changing under the deploy")

    def write_entry(self, entry) -> None:
        """Sets our model's entry in the current config (other models untouched)."""

        def transform(text: str | None) -> str:
            current = _parse(text, self.config.source())
            _, now = _find(current, self.name)
            if not self.owns(now):
                raise DeployError(
                    f"the entry of model {self.name} in {self.config.source()} was changed by "
                    "someone else during the deploy (another deploy of the same model?)"
                )
            return _render(_with_entry(current, self.name, entry))

        self.update(transform, entry)

    # --- waits -------------------------------------------------------------------------------

    def wait(self, what: str, check: Callable[[str], str | None], timeout: float) -> None:
        """Polls ``check(target)`` for every target until each returns None (= done).

        ``check`` returns a string saying what it is still waiting for, or raises DeployError
        for a definite failure.
        """
        deadline = time.monotonic() + timeout
        pending = list(self.config.targets)
        waiting: dict[str, str] = {}
        while True:
            waiting = {t: state for t in pending if (state := check(t)) is not None}
            pending = list(waiting)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise DeployError(
                    f"{what}: not done after {timeout:g}s ("
                    + "; ".join(f"{t}: {state}" for t, state in waiting.items())
                    + "); if the server rejected the config, its log says why"
                )
            time.sleep(self.config.poll_interval_s)

    def version_available(self, version: int) -> Callable[[str], str | None]:
        import grpc

        from serving.process import model_state

        def check(target: str) -> str | None:
            try:
                states = model_state(target, self.name, timeout=5.0)
            except grpc.RpcError as err:
                return f"{err.code().name}: {err.details()}"
            state, error = states.get(version, (None, ""))
            if state == AVAILABLE:
                return None
            if state == END and error:
                raise DeployError(
                    f"version {version} of model {self.name} failed to load at {target}: {error}"
                )
            return f"version {version}: {_state_name(state)}"

        return check

    def label_resolves(self, label: str, version: int) -> Callable[[str], str | None]:
        import grpc

        from serving.process import model_state

        def check(target: str) -> str | None:
            try:
                states = model_state(target, self.name, timeout=5.0, version_label=label)
            except grpc.RpcError as err:
                return f"label {label}: {err.code().name}: {err.details()}"
            if states.get(version, (None, ""))[0] == AVAILABLE:
                return None
            shown = {v: _state_name(s) for v, (s, _) in states.items()}
            return f"label {label} -> {shown}"

        return check

    def available_everywhere(self) -> set[int]:
        """Versions AVAILABLE on every target now (unreachable target: none)."""
        import grpc

        from serving.process import model_state

        common: set[int] | None = None
        for target in self.config.targets:
            try:
                states = model_state(target, self.name, timeout=5.0)
            except grpc.RpcError:
                return set()
            here = {v for v, (s, _) in states.items() if s == AVAILABLE}
            common = here if common is None else common & here
        return common or set()

    # --- rollback ----------------------------------------------------------------------------

    def rollback(self, previous: int | None) -> None:
        """Restores the original config (exactly when nobody else wrote) and waits for prev."""
        timeout = self.config.timeout_s
        original = self.original_entry
        source = self.config.source()

        def restore(entry) -> Callable[[str | None], str | None]:
            def transform(text: str | None) -> str | None:
                current = _parse(text, source)
                _, now = _find(current, self.name)
                if not self.owns(now):
                    raise DeployError(
                        f"not rolled back: the entry of model {self.name} in {source} was "
                        "changed by someone else during the deploy"
                    )
                if entry is original and text == self.last_text:
                    return self.original_text  # byte for byte (None: the key was absent)
                if entry is original and text != self.last_text:
                    log.warning(
                        "%s changed during the deploy: restoring only the entry of %s",
                        source,
                        self.name,
                    )
                return _render(_with_entry(current, self.name, entry))

            return transform

        if original is not None and original.version_labels:
            # TF Serving refuses a config whose labels name versions that are not available.
            available = self.available_everywhere()
            unavailable = sorted(
                {v for v in original.version_labels.values() if v not in available}
            )
            if unavailable:
                from tensorflow_serving.config import model_server_config_pb2

                interim = model_server_config_pb2.ModelConfig()
                interim.CopyFrom(original)
                for label, version in list(original.version_labels.items()):
                    if version in unavailable:
                        del interim.version_labels[label]
                log.info(
                    "rollback: reloading versions %s before restoring the labels on them",
                    unavailable,
                )
                self.update(restore(interim), interim)
                for version in unavailable:
                    try:
                        self.wait(
                            f"reloading version {version}", self.version_available(version), timeout
                        )
                    except DeployError as err:
                        log.warning("rollback: %s", err)
        self.update(restore(original), original)
        self.result.rolled_back = True
        # The server has applied the restored config when the labels are the original ones.
        expected: dict[str, int | None] = dict.fromkeys(MANAGED_LABELS)
        if original is not None:
            expected.update({k: int(v) for k, v in original.version_labels.items()})
        waits = [(f"labels back to {_shown(expected)}", self.labels_are(expected))]
        if previous is not None and previous not in expected.values():
            waits.append((f"version {previous} AVAILABLE", self.version_available(previous)))
        if original is None:
            waits.append((f"model {self.name} unloaded", self.nothing_available()))
        self.result.rollback_verified = True
        for what, check in waits:
            try:
                self.wait(f"rollback: {what}", check, timeout)
            except DeployError as err:
                log.error("%s", err)
                self.result.rollback_verified = False
                return

    def labels_are(self, expected: dict[str, int | None]) -> Callable[[str], str | None]:
        """Each label resolves to its version (AVAILABLE), or is unknown when None."""
        import grpc

        from serving.process import model_state

        def check(target: str) -> str | None:
            for label, version in expected.items():
                try:
                    states = model_state(target, self.name, timeout=5.0, version_label=label)
                except grpc.RpcError as err:
                    if version is None and err.code() in (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.NOT_FOUND,
                    ):
                        continue
                    return f"label {label}: {err.code().name}: {err.details()}"
                if version is None:
                    return f"label {label} still set"
                if states.get(version, (None, ""))[0] != AVAILABLE:
                    return f"label {label} -> {sorted(states)}"
            return None

        return check

    def nothing_available(self) -> Callable[[str], str | None]:
        import grpc

        from serving.process import model_state

        def check(target: str) -> str | None:
            try:
                states = model_state(target, self.name, timeout=5.0)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                return f"{err.code().name}: {err.details()}"
            serving = sorted(v for v, (s, _) in states.items() if s == AVAILABLE)
            return f"versions {serving} still AVAILABLE" if serving else None

        return check


def _shown(labels: dict[str, int | None]) -> str:
    return "{" + ", ".join(f"{k}: {'-' if v is None else v}" for k, v in labels.items()) + "}"


def _state_name(state: int | None) -> str:
    if state is None:
        return "unknown to the server"
    from tensorflow_serving.apis import get_model_status_pb2

    return get_model_status_pb2.ModelVersionStatus.State.Name(state)


def _open_store(config: DeployConfig, core_api=None):
    if config.mode == "local":
        return _FileStore(Path(config.config_file))
    owned = None
    if core_api is None:
        core_api, owned = _kubernetes_api(config)
    return _ConfigMapStore(
        core_api, config.namespace, config.configmap, config.configmap_key, owned_client=owned
    )


def deploy(
    config: DeployConfig, smoke_check: SmokeCheck | None = None, *, core_api=None
) -> DeployResult:
    """Roll ``config.version`` out: load, canary label, smoke check, promote; roll back on failure.

    Args:
        config: What to deploy where.
        smoke_check: The check run through the ``canary`` label on every serving target;
            None runs `default_smoke_check` (real Predict requests).
        core_api: A ``kubernetes.client.CoreV1Api`` to use in ``kubernetes`` mode instead of
            one built from the config (``kube_api_host``, in-cluster or kubeconfig).

    Returns:
        The result (also written to ``report_dir``); ``status`` is ``deployed`` or
        ``unchanged``.

    Raises:
        FileNotFoundError: The config file, the ConfigMap, the version directory (local mode)
            or the smoke rows are missing; nothing was written.
        DeployError: A step failed. When anything had been written, the original config was
            restored first (``error.result.status`` is ``rolled_back`` or ``rollback_failed``).
    """
    smoke_check = smoke_check or default_smoke_check
    started = time.perf_counter()
    result = DeployResult(
        model_name=config.name,
        version=config.version,
        previous=None,
        mode=config.mode,
        config_source=config.source(),
        targets=config.targets,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    store = _open_store(config, core_api)
    run = _Deployment(config, store, result)
    try:
        try:
            _run(run, smoke_check)
        except BaseException as err:
            result.error = result.error or str(err)
            if run.written:
                log.error("%s: deploy failed (%s): rolling back", config.name, err)
                try:
                    with run.phase("rollback") as record:
                        run.rollback(result.previous)
                        record["detail"] = "original config restored" + (
                            "" if result.rollback_verified else "; previous version not back"
                        )
                    result.status = "rolled_back" if result.rollback_verified else "rollback_failed"
                except Exception as rollback_err:
                    result.status = "rollback_failed"
                    result.error += f"; rollback failed: {rollback_err}"
                    log.error("%s: rollback failed: %s", config.name, rollback_err)
            if not isinstance(err, Exception) or (
                isinstance(err, FileNotFoundError) and not run.written
            ):
                raise
            raise DeployError(
                f"deploy of {config.name} version {config.version} failed"
                f"{' and was rolled back' if result.status == 'rolled_back' else ''}: "
                f"{result.error}",
                result,
            ) from err
    finally:
        store.close()
        result.seconds = round(time.perf_counter() - started, 3)
        if config.report_dir is not None:
            _write_report(config.report_dir, result)
    return result


def _run(run: _Deployment, smoke_check: SmokeCheck) -> None:
    config, result, name, new = run.config, run.result, run.config.name, run.config.version

    with run.phase("read") as record:
        run.original_text, _ = run.store.read()
        original = _parse(run.original_text, config.source())
        _, run.original_entry = _find(original, name)
        run.expected_entry = run.original_entry
        previous = _previous_version(run.original_entry)
        result.previous = previous
        base = run.original_entry
        if base is None:
            from tensorflow_serving.config import model_server_config_pb2

            base = model_server_config_pb2.ModelConfig(
                name=name,
                base_path=str(Path(config.model_repository) / name),
                model_platform=TENSORFLOW_PLATFORM,
            )
        elif Path(base.base_path) != Path(config.model_repository) / name:
            log.warning(
                "model %s is served from %s, not from %s/%s: deploying version %d from there",
                name,
                base.base_path,
                config.model_repository,
                name,
                new,
            )
        version_dir: Path | None = None
        if "://" not in base.base_path:
            candidate = Path(base.base_path) / str(new)
            if candidate.is_dir():
                version_dir = candidate
            elif config.mode == "local":
                raise FileNotFoundError(
                    f"version {new} of {name} is not in the model repository: no {candidate}"
                )
        if run.original_entry is not None and run.original_entry.model_version_policy.WhichOneof(
            "policy_choice"
        ) in (None, "latest", "all"):
            log.warning(
                "model %s has a %s version policy: after a rollback it may serve version %d "
                "anyway, since it is on disk",
                name,
                run.original_entry.model_version_policy.WhichOneof("policy_choice") or "latest",
                new,
            )
        record["detail"] = f"previous {previous}, new {new}"

    if previous == new:
        result.status = "unchanged"
        log.info("%s: version %d already is %s: nothing to do", name, new, STABLE)
        return

    rows = None
    with run.phase("prepare smoke check") as record:
        try:
            rows = _smoke_rows(config, version_dir)
        except (OSError, ValueError, KeyError) as err:
            if smoke_check is default_smoke_check:
                raise FileNotFoundError(f"no rows for the smoke check: {err}") from err
        if rows is None and smoke_check is default_smoke_check:
            raise FileNotFoundError(
                "no rows for the smoke check: give features_dir or smoke_request (the version "
                "has no readable warm-up requests)"
            )
        horizon = _expected_horizon(config, version_dir)
        record["detail"] = f"{0 if rows is None else len(rows)} rows, horizon {horizon}"

    versions = [new] if previous is None else [previous, new]
    keep = {STABLE: previous} if previous is not None else {}
    with run.phase("load") as record:
        run.write_entry(_entry_with(base, versions, keep))
        run.wait(f"loading version {new}", run.version_available(new), config.timeout_s)
        record["detail"] = f"versions {versions} loaded"

    with run.phase("canary") as record:
        run.write_entry(_entry_with(base, versions, {**keep, CANARY: new}))
        run.wait(f"label {CANARY} -> {new}", run.label_resolves(CANARY, new), config.timeout_s)
        record["detail"] = f"{CANARY} -> {new}"

    with run.phase("smoke check") as record:
        for target in config.targets:
            ctx = SmokeContext(
                target=target,
                model_name=name,
                use_case=config.use_case,
                label=CANARY,
                version=new,
                horizon=horizon,
                features=rows,
                timeout_s=min(30.0, config.timeout_s),
            )
            try:
                figures = dict(smoke_check(ctx))
            except SmokeCheckError as err:
                result.smoke.append({"target": target, "ok": False, **err.figures})
                raise
            except Exception as err:
                result.smoke.append({"target": target, "ok": False, "error": str(err)})
                raise SmokeCheckError(f"smoke check failed at {target}: {err}") from err
            result.smoke.append({"target": target, "ok": True, **figures})
        record["detail"] = f"{len(config.targets)} target(s) passed"

    promoted = {STABLE: new} if previous is None else {STABLE: new, PREVIOUS: previous}
    with run.phase("promote") as record:
        run.write_entry(_entry_with(base, versions, promoted))
        run.wait(f"label {STABLE} -> {new}", run.label_resolves(STABLE, new), config.timeout_s)
        record["detail"] = ", ".join(f"{k} -> {v}" for k, v in promoted.items())
    result.status = "deployed"
    log.info("%s: version %d is %s (previous: %s)", name, new, STABLE, previous)


# --- report -----------------------------------------------------------------------------------


def _write_report(report_dir: Path, result: DeployResult) -> None:
    from perucast.io import write_json_atomic, write_text_atomic

    try:
        write_json_atomic(Path(report_dir) / "deploy.json", result.to_dict())
        write_text_atomic(Path(report_dir) / "deploy.md", _markdown(result))
    except OSError as err:  # a report must not hide the deploy's own outcome
        log.error("could not write the deploy report to %s: %s", report_dir, err)


def _markdown(result: DeployResult) -> str:
    outcome = {
        "deployed": f"version {result.version} is `stable`",
        "unchanged": f"version {result.version} already was `stable`: nothing changed",
        "rolled_back": "**rolled back**: the original config is restored",
        "rollback_failed": "**rollback incomplete**: check the serving config and the servers",
        "failed": "**failed** before anything was written",
    }[result.status]
    lines = [
        f"# Deploy of {result.model_name} version {result.version}",
        "",
        f"- outcome: {outcome}",
        f"- previous version: {result.previous if result.previous is not None else 'none'}",
        f"- serving config: {result.config_source} ({result.mode})",
        f"- serving targets: {', '.join(result.targets)}",
        f"- started: {result.started_at}; took {result.seconds:.1f} s",
    ]
    if result.error:
        lines.append(f"- error: {result.error}")
    if result.rolled_back:
        lines.append(
            f"- rolled back: yes; previous version serving again: "
            f"{'yes' if result.rollback_verified else 'NOT CONFIRMED'}"
        )
    lines += ["", "| phase | seconds | ok | detail |", "|---|---:|---|---|"]
    for p in result.phases:
        detail = str(p["detail"]).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {p['phase']} | {p['seconds']:.2f} | {'yes' if p['ok'] else 'NO'} | {detail} |"
        )
    if result.smoke:
        lines += ["", "## Smoke check", ""]
        lines += ["| target | ok | requests | rows | max latency ms | p50 range | error |"]
        lines += ["|---|---|---:|---:|---:|---|---|"]
        for s in result.smoke:
            latency = max(s.get("latency_ms") or [0.0])
            p50 = f"{s['p50_min']:.4g} .. {s['p50_max']:.4g}" if "p50_min" in s else ""
            lines.append(
                f"| {s.get('target', '')} | {'yes' if s.get('ok') else 'NO'} | "
                f"{s.get('requests', '')} | {s.get('rows', '')} | {latency:.1f} | {p50} | "
                f"{s.get('error', '')} |"
            )
    return "\n".join(lines) + "\n"


# --- CLI --------------------------------------------------------------------------------------


def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    version: Annotated[int, typer.Option(help="The version push wrote.")],
    model_repository: Annotated[
        Path, typer.Option("--model-repository", help="Repository root as the servers see it.")
    ],
    serving_target: Annotated[
        str, typer.Option("--serving-target", help="gRPC host:port (comma-separated: per pod).")
    ],
    mode: Annotated[str, typer.Option(help="local or kubernetes.")] = "local",
    config_file: Annotated[
        Path | None, typer.Option("--config-file", help="local: the server's config file.")
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="kubernetes: namespace.")] = None,
    configmap: Annotated[str | None, typer.Option(help="kubernetes: ConfigMap name.")] = None,
    configmap_key: Annotated[str, typer.Option(help="kubernetes: ConfigMap key.")] = (
        "models.config"
    ),
    kube_api_host: Annotated[
        str | None, typer.Option(help="kubernetes: API URL without credentials (kubectl proxy).")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Default: the use case.")] = None,
    features_dir: Annotated[
        Path | None, typer.Option("--features", help="Feature dataset (smoke rows).")
    ] = None,
    smoke_request: Annotated[
        Path | None, typer.Option("--smoke-request", help="JSON rows for the smoke check.")
    ] = None,
    smoke_samples: Annotated[int, typer.Option(help="Rows the smoke check sends.")] = 16,
    timeout: Annotated[float, typer.Option(help="Seconds each wait may take.")] = 300.0,
    poll_interval: Annotated[float, typer.Option(help="Seconds between status polls.")] = 1.0,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Directory for deploy.json/.md.")
    ] = None,
) -> None:
    """Roll a model version out with canary and stable labels; roll back on failure."""
    from perucast.exitcodes import ExitCode
    from perucast.logs import setup_logging

    setup_logging()
    try:
        config = DeployConfig(
            use_case=use_case,
            model_name=model_name,
            version=version,
            model_repository=model_repository,
            mode=mode,
            config_file=config_file,
            namespace=namespace,
            configmap=configmap,
            configmap_key=configmap_key,
            kube_api_host=kube_api_host,
            serving_target=serving_target,
            features_dir=features_dir,
            smoke_request=smoke_request,
            smoke_samples=smoke_samples,
            timeout_s=timeout,
            poll_interval_s=poll_interval,
            report_dir=report_dir,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        result = deploy(config)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND) from None
    except DeployError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None  # the step failed (rolled back when anything was written)
    typer.echo(
        f"{result.model_name}: version {result.version} is {STABLE} "
        f"(previous: {result.previous if result.previous is not None else 'none'}; "
        f"{result.status}, {result.seconds:.1f} s)"
    )


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
app.command()(cli)

if __name__ == "__main__":
    app()
