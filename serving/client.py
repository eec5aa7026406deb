"""`ForecastClient`: the gRPC client services use to get forecasts from ``perucast-model-server``.

It speaks TensorFlow Serving's API with the official stubs (``PredictionServiceStub``,
``ModelServiceStub``), so it works against ``tensorflow_model_server`` too. One client holds one
channel (thread-safe, reused by every call; close it or use the client as a context manager)::

    from serving.client import ForecastClient

    with ForecastClient("localhost:8500", label="stable") as client:
        forecast = client.predict_crop_demand(features)  # dict of columns or a DataFrame
        forecast.p50                                       # [rows, H] float32
        frame = forecast.to_frame()                        # region, crop, horizon, p10..p90

What it does for a caller:

* **Raw features in.** The columns are converted to ``TensorProto``s with the dtypes of the
  model's ``serving_default`` inputs (read once per model version with ``GetModelMetadata``):
  strings as ``DT_STRING``, integer codes as ``DT_INT64``, values as ``DT_FLOAT`` with missing
  values (None, NaN, ``pd.NA``) as NaN. Missing and unknown columns, ragged columns, missing
  strings or integer codes are refused locally with a `ValueError` before anything is sent.
* **Quantiles out.** `Forecast` holds ``p10``/``p50``/``p90`` ``[rows, H]`` arrays and the model
  spec the server actually used; `Forecast.to_frame` makes the long frame (one row per series
  and horizon) with ``perucast.forecasts.wide_to_long`` when the origin time is known.
* **Retries.** UNAVAILABLE (server down, restarting, draining, connection refused) is retried
  by gRPC's own retry policy (service config ``methodConfig.retryPolicy``): up to ``retries``
  more attempts with exponential backoff and jitter, all within the call's deadline. Nothing
  else is retried.
* **Deadlines.** Every RPC carries ``timeout=timeout_s``.
* **Errors.** A failed RPC raises `ServingClientError` with the gRPC status code and the
  server's message.
* **TLS.** `TLSOptions`: the CA that signs the server certificate (or the system roots), a
  client certificate and key for mutual TLS, and a server name override.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import numpy as np

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_SIGNATURE = "serving_default"
QUANTILES: tuple[str, ...] = ("p10", "p50", "p90")  # perucast.quantiles.QUANTILE_COLUMNS
MAX_RETRIES = 4  # gRPC caps maxAttempts at 5 (grpc-core retry_service_config.cc)

_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")

# tensorflow.DataType enum value -> (dtype name as in metadata.json, numpy dtype).
_DT_STRING = 7
_DTYPES: dict[int, tuple[str, Any]] = {
    1: ("float32", np.float32),
    2: ("float64", np.float64),
    3: ("int32", np.int32),
    4: ("uint8", np.uint8),
    5: ("int16", np.int16),
    6: ("int8", np.int8),
    _DT_STRING: ("string", object),
    9: ("int64", np.int64),
    10: ("bool", np.bool_),
}
_DTYPE_ENUM = {name: enum for enum, (name, _) in _DTYPES.items()}
# TensorProto field holding the values of each dtype when tensor_content is empty.
_VALUE_FIELD = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    _DT_STRING: "string_val",
    9: "int64_val",
    10: "bool_val",
}


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------


class ServingClientError(Exception):
    """A failed RPC, after retries: the gRPC status code and the server's message.

    Attributes:
        code: The ``grpc.StatusCode`` (e.g. ``NOT_FOUND``, ``UNAVAILABLE``).
        details: The server's (or gRPC's) error message.
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    def __repr__(self) -> str:
        return f"ServingClientError({self.code.name}, {self.details!r})"


@dataclass(frozen=True)
class ModelSpec:
    """The model a response came from: name, version number and signature."""

    name: str
    version: int
    signature: str


class VersionStatus(NamedTuple):
    """One version of `ForecastClient.status`: its number, state name (``AVAILABLE``, ``LOADING``,
    ``END``, ...) and error message (empty when OK)."""

    version: int
    state: str
    error: str


@dataclass(frozen=True)
class ModelMetadata:
    """A model version's signature, from ``GetModelMetadata``.

    Attributes:
        name: The model name.
        version: The version the server resolved (latest or label -> number).
        signature: The signature name.
        inputs: Input name -> dtype name (``string``, ``int64``, ``float32``, ...).
        outputs: Output name -> dtype name.
        horizon: The last dimension of ``p50`` when the signature declares it, else None.
        signature_def: The raw ``tensorflow.SignatureDef``.
    """

    name: str
    version: int
    signature: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    horizon: int | None = None
    signature_def: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class TLSOptions:
    """TLS settings of a `ForecastClient` channel. PEM text (str or bytes), not file paths.

    Attributes:
        root_ca: PEM of the CA(s) that sign the server certificate; None uses the system roots.
        client_cert: PEM certificate chain of this client, for mutual TLS.
        client_key: PEM private key of ``client_cert``.
        server_name: Name to verify the server certificate against (and the ``:authority``)
            instead of the target's host, e.g. when connecting by IP or through a tunnel.
    """

    root_ca: str | bytes | None = None
    client_cert: str | bytes | None = None
    client_key: str | bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("TLSOptions: client_cert and client_key go together (mutual TLS)")
        for name in ("root_ca", "client_cert", "client_key"):
            value = getattr(self, name)
            if value is not None and b"-----BEGIN" not in _as_bytes(value):
                raise ValueError(
                    f"TLSOptions.{name} is not PEM text (no '-----BEGIN' line); use "
                    "TLSOptions.from_files() to read PEM files"
                )

    @classmethod
    def from_files(
        cls,
        root_ca: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        server_name: str | None = None,
    ) -> TLSOptions:
        """TLSOptions from PEM files."""

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(read(root_ca), read(client_cert), read(client_key), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=_as_bytes(self.root_ca),
            private_key=_as_bytes(self.client_key),
            certificate_chain=_as_bytes(self.client_cert),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if not self.server_name:
            return []
        return [
            ("grpc.ssl_target_name_override", self.server_name),
            ("grpc.default_authority", self.server_name),
        ]


@dataclass(frozen=True)
class Forecast:
    """P10/P50/P90 forecasts of a batch of feature rows.

    Attributes:
        p10: ``[rows, H]`` float32.
        p50: ``[rows, H]`` float32.
        p90: ``[rows, H]`` float32.
        model_spec: The model version and signature the server used.
        features: The feature columns passed in (as numpy arrays), for `to_frame`'s key columns.
        series_keys: Default key columns of `to_frame` (the use case's series keys).
        time_column: The origin time column of the use case (``to_frame`` adds ``origin`` and
            ``target_time`` when the features hold it).
        period: Spacing of periods as a pandas offset alias (``"W-MON"``, ``"MS"``).
    """

    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    model_spec: ModelSpec
    features: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    series_keys: tuple[str, ...] = ()
    time_column: str | None = None
    period: str | None = None

    @property
    def horizon(self) -> int:
        """H, the number of periods ahead."""
        return int(self.p50.shape[1])

    def __len__(self) -> int:
        return int(self.p50.shape[0])

    def quantiles(self) -> dict[str, np.ndarray]:
        """``{"p10": ..., "p50": ..., "p90": ...}``."""
        return {"p10": self.p10, "p50": self.p50, "p90": self.p90}

    def to_frame(self, keys: Sequence[str] | None = None) -> pd.DataFrame:
        """The long forecast frame: one row per feature row and horizon (row-major).

        Columns: ``origin`` (when the features hold the use case's time column), the key
        columns, ``horizon`` (1..H), ``target_time`` (with ``origin``), ``p10``, ``p50``, ``p90``.

        Args:
            keys: Feature columns identifying a row's series; default: the use case's series
                keys (``region``/``crop``, ``zone``), none for a model without a use case.

        Raises:
            ValueError: A key column is not among the features.
        """
        import pandas as pd

        from perucast.forecasts import ACTUAL, HORIZON, MODEL, wide_to_long

        keys = list(self.series_keys if keys is None else keys)
        missing = [k for k in keys if k not in self.features]
        if missing:
            raise ValueError(f"key columns {missing} are not among the features")
        rows, horizon = self.p50.shape
        if self.time_column and self.period and self.time_column in self.features:
            origins = pd.DataFrame(
                {self.time_column: self.features[self.time_column]}
                | {k: self.features[k] for k in keys}
            )
            frame = wide_to_long(
                origins,
                self.quantiles(),
                time_column=self.time_column,
                series_keys=keys,
                period=self.period,
                model=self.model_spec.name,
            )
            return frame.drop(columns=[ACTUAL, MODEL]).reset_index(drop=True)
        columns: dict[str, Any] = {k: np.repeat(_as_1d(self.features[k]), horizon) for k in keys}
        columns[HORIZON] = np.tile(np.arange(1, horizon + 1), rows)
        for name, values in self.quantiles().items():
            columns[name] = np.asarray(values).reshape(-1)
        return pd.DataFrame(columns)


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


def retry_service_config(retries: int, initial_backoff_s: float = 0.2, max_backoff_s: float = 5.0):
    """The gRPC service config retrying UNAVAILABLE on TF Serving's two services.

    gRPC waits ``random(0, min(initial_backoff_s * 2**n, max_backoff_s))`` before retry n+1
    (exponential backoff with full jitter); all attempts share the call's deadline.
    """
    config: dict[str, Any] = {"methodConfig": [{"name": [{"service": s} for s in _SERVICES]}]}
    if retries > 0:
        config["methodConfig"][0]["retryPolicy"] = {
            "maxAttempts": retries + 1,
            "initialBackoff": f"{initial_backoff_s:.3f}s",
            "maxBackoff": f"{max_backoff_s:.3f}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return config


class ForecastClient:
    """A client of perucast's forecast models on a TF-Serving-compatible server.

    Args:
        target: ``host:port`` of the gRPC API (e.g. ``localhost:8500``).
        use_case: ``crop_demand`` or ``fish_stock``: the default model name, and the series
            keys, time column and period `Forecast.to_frame` uses.
        model_name: The model name in the server's config (default: ``use_case``).
        version: Ask for this version (exclusive with ``label``); default: the latest.
        label: Ask for the version with this label (e.g. ``stable``, ``canary``).
        signature: The signature to call.
        timeout_s: Deadline of every RPC, retries included.
        retries: Extra attempts after UNAVAILABLE (0..4; gRPC allows 5 attempts at most).
        initial_backoff_s: Upper bound of the first retry's random wait (doubles each time).
        max_backoff_s: Cap of the retry wait.
        tls: `TLSOptions`, True for TLS with the system roots, or None for plaintext.
        channel_options: Extra gRPC channel arguments (override the client's defaults).

    Raises:
        ValueError: Both version and label, retries out of range, or an unknown use case.
    """

    def __init__(
        self,
        target: str,
        *,
        use_case: str | None = None,
        model_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str = DEFAULT_SIGNATURE,
        timeout_s: float = 10.0,
        retries: int = 3,
        initial_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        tls: TLSOptions | bool | None = None,
        channel_options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    ):
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if version is not None and label is not None:
            raise ValueError("give a model version or a version label, not both")
        if not 0 <= retries <= MAX_RETRIES:
            raise ValueError(f"retries must be 0..{MAX_RETRIES} (gRPC allows 5 attempts at most)")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if use_case is not None:
            _use_case_info(use_case)  # unknown use case: fail now
        self.target = target
        self.use_case = use_case
        self.model_name = model_name or use_case
        self.version = version
        self.label = label
        self.signature = signature
        self.timeout_s = timeout_s
        self.retries = retries
        if tls is True:
            tls = TLSOptions()
        self.tls: TLSOptions | None = tls or None

        options: dict[str, Any] = {
            "grpc.max_receive_message_length": -1,
            "grpc.max_send_message_length": -1,
            "grpc.enable_retries": 1,
            "grpc.service_config": json.dumps(
                retry_service_config(retries, initial_backoff_s, max_backoff_s)
            ),
            # A request larger than the retry buffer is never retried: make room for big batches.
            "grpc.per_rpc_retry_buffer_size": 64 << 20,
            "grpc.retry_buffer_size": 256 << 20,
            # Reconnect soon after a server restart (gRPC's default starts at 1 s).
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 2000,
        }
        if self.tls is not None:
            options.update(self.tls.channel_options())
        if channel_options:
            items = (
                channel_options.items() if isinstance(channel_options, Mapping) else channel_options
            )
            options.update(dict(items))
        option_list = list(options.items())
        if self.tls is not None:
            self._channel = grpc.secure_channel(target, self.tls.credentials(), option_list)
        else:
            self._channel = grpc.insecure_channel(target, option_list)
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._lock = threading.Lock()
        self._metadata: dict[tuple[str, int, str], ModelMetadata] = {}  # (name, version, sig)
        self._resolved: dict[tuple, int] = {}  # (name, selector, sig) -> version
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel (calls in flight are cancelled). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._channel.close()

    def __enter__(self) -> ForecastClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        selector = (
            f"version={self.version}" if self.version is not None else f"label={self.label!r}"
        )
        return (
            f"ForecastClient({self.target!r}, model_name={self.model_name!r}, {selector}, "
            f"tls={self.tls is not None})"
        )

    # --- calls -------------------------------------------------------------------------------

    def predict(
        self,
        features: Mapping[str, Any] | pd.DataFrame,
        *,
        as_frame: bool = False,
        model_name: str | None = None,
        use_case: str | None = None,
        passthrough: Iterable[str] = (),
        ignore_extra: bool = False,
        timeout_s: float | None = None,
    ) -> Forecast | pd.DataFrame:
        """Forecasts for rows of raw features.

        Args:
            features: One column per model input (a mapping of array-likes or a DataFrame).
            as_frame: Return `Forecast.to_frame()` instead of the `Forecast`.
            model_name: Override of the client's model name.
            use_case: Override of the client's use case (series keys, time column, period).
            passthrough: Extra columns allowed in ``features`` and not sent (the use case's
                time column always is), e.g. identifiers for `Forecast.to_frame`.
            ignore_extra: Drop every column the model does not take instead of refusing it.
            timeout_s: Override of the client's deadline for this call.

        Returns:
            A `Forecast` (or its long frame with ``as_frame``).

        Raises:
            ValueError: Missing, unknown or ragged columns, values that do not fit the input
                dtype, no rows, or a model that does not output p10/p50/p90; nothing is sent.
            ServingClientError: The server or the connection failed (after retries).
        """
        use_case = use_case or self.use_case
        name = model_name or self.model_name or use_case
        if not name:
            raise ValueError("no model name: pass model_name= or use_case= to the client")
        info = _use_case_info(use_case) if use_case else None
        columns = _columns(features)
        timeout = self.timeout_s if timeout_s is None else timeout_s

        meta = self._resolve_metadata(name, timeout)
        missing_outputs = [q for q in QUANTILES if q not in meta.outputs]
        if missing_outputs:
            raise ValueError(
                f"model {name!r} version {meta.version} signature {meta.signature!r} does not "
                f"output {missing_outputs} (outputs: {sorted(meta.outputs)}): not a forecaster"
            )
        allowed = set(passthrough)
        if info is not None:
            allowed.add(info["time_column"])
        inputs, rows = _encode_inputs(columns, meta, allowed, ignore_extra)

        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, name)
        request.output_filter.extend(QUANTILES)
        for key, proto in inputs.items():
            request.inputs[key].CopyFrom(proto)
        try:
            response = self._call(self._predict_stub.Predict, request, timeout)
        except ServingClientError:
            self._forget(name)  # the version may have changed: re-read metadata next time
            raise
        served = ModelSpec(
            name=response.model_spec.name or name,
            version=response.model_spec.version.value,
            signature=response.model_spec.signature_name or meta.signature,
        )
        if served.version and served.version != meta.version:
            self._forget(name)  # a new latest version (or label move) since the metadata
        arrays = {}
        for q in QUANTILES:
            if q not in response.outputs:
                raise ServingClientError(
                    grpc.StatusCode.INTERNAL, f"the response lacks output {q!r}"
                )
            arrays[q] = tensor_to_array(response.outputs[q])
        for q, values in arrays.items():
            if values.ndim != 2 or values.shape[0] != rows:
                raise ServingClientError(
                    grpc.StatusCode.INTERNAL,
                    f"output {q!r} has shape {values.shape}, expected [{rows}, H]",
                )
        forecast = Forecast(
            p10=arrays["p10"],
            p50=arrays["p50"],
            p90=arrays["p90"],
            model_spec=served,
            features=columns,
            series_keys=tuple(info["series_keys"]) if info else (),
            time_column=info["time_column"] if info else None,
            period=info["period"] if info else None,
        )
        return forecast.to_frame() if as_frame else forecast

    def predict_crop_demand(
        self, features: Mapping[str, Any] | pd.DataFrame, *, as_frame: bool = False, **kwargs: Any
    ) -> Forecast | pd.DataFrame:
        """`predict` on the ``crop_demand`` model: weekly demand by region and crop."""
        return self.predict(
            features, as_frame=as_frame, model_name="crop_demand", use_case="crop_demand", **kwargs
        )

    def predict_fish_stock(
        self, features: Mapping[str, Any] | pd.DataFrame, *, as_frame: bool = False, **kwargs: Any
    ) -> Forecast | pd.DataFrame:
        """`predict` on the ``fish_stock`` model: monthly anchoveta biomass by fishing zone."""
        return self.predict(
            features, as_frame=as_frame, model_name="fish_stock", use_case="fish_stock", **kwargs
        )

    def status(
        self, model_name: str | None = None, *, timeout_s: float | None = None
    ) -> list[VersionStatus]:
        """GetModelStatus: every version the server knows (or the client's version/label).

        Returns:
            `VersionStatus` (version, state name, error message) tuples, by version.
        """
        from tensorflow_serving.apis import get_model_status_pb2

        name = self._name(model_name)
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec, name, signature=False)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        response = self._call(self._model_stub.GetModelStatus, request, timeout)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return sorted(
            VersionStatus(int(s.version), state_name(s.state), s.status.error_message)
            for s in response.model_version_status
        )

    def metadata(
        self, model_name: str | None = None, *, timeout_s: float | None = None
    ) -> ModelMetadata:
        """GetModelMetadata of the client's version (latest, number or label), read afresh."""
        name = self._name(model_name)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        meta = self._fetch_metadata(name, timeout)
        with self._lock:
            self._metadata[(name, meta.version, self.signature)] = meta
            self._resolved[self._selector(name)] = meta.version
        return meta

    # --- internals ---------------------------------------------------------------------------

    def _name(self, model_name: str | None) -> str:
        name = model_name or self.model_name
        if not name:
            raise ValueError("no model name: pass model_name= or use_case= to the client")
        return name

    def _selector(self, name: str) -> tuple:
        return (name, self.version, self.label, self.signature)

    def _fill_spec(self, spec, name: str, signature: bool = True) -> None:
        spec.name = name
        if signature:
            spec.signature_name = self.signature
        if self.version is not None:
            spec.version.value = self.version
        elif self.label is not None:
            spec.version_label = self.label

    def _forget(self, name: str) -> None:
        with self._lock:
            self._resolved.pop(self._selector(name), None)

    def _resolve_metadata(self, name: str, timeout: float) -> ModelMetadata:
        """The metadata of the version the client's selector points at, cached per version."""
        with self._lock:
            version = self._resolved.get(self._selector(name))
            if version is not None:
                cached = self._metadata.get((name, version, self.signature))
                if cached is not None:
                    return cached
        return self.metadata(name, timeout_s=timeout)

    def _fetch_metadata(self, name: str, timeout: float) -> ModelMetadata:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec, name, signature=False)
        response = self._call(self._predict_stub.GetModelMetadata, request, timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        if self.signature not in signature_map.signature_def:
            raise ServingClientError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {name!r} version {response.model_spec.version.value} has no signature "
                f"{self.signature!r} (signatures: {sorted(signature_map.signature_def)})",
            )
        definition = signature_map.signature_def[self.signature]
        horizon = None
        if "p50" in definition.outputs:
            dims = definition.outputs["p50"].tensor_shape.dim
            if len(dims) == 2 and dims[1].size > 0:
                horizon = int(dims[1].size)
        return ModelMetadata(
            name=response.model_spec.name or name,
            version=int(response.model_spec.version.value),
            signature=self.signature,
            inputs={k: _dtype_name(v.dtype) for k, v in definition.inputs.items()},
            outputs={k: _dtype_name(v.dtype) for k, v in definition.outputs.items()},
            horizon=horizon,
            signature_def=definition,
        )

    def _call(self, method, request, timeout: float):
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if callable(getattr(err, "code", None)) else None
            details = err.details() if callable(getattr(err, "details", None)) else str(err)
            raise ServingClientError(code or grpc.StatusCode.UNKNOWN, details or "") from err


# --------------------------------------------------------------------------------------------
# Features -> TensorProtos, TensorProto -> numpy
# --------------------------------------------------------------------------------------------


def _as_bytes(value: str | bytes | None) -> bytes | None:
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)


def _as_1d(values: Any) -> np.ndarray:
    array = np.asarray(values)
    return array.reshape(1) if array.ndim == 0 else array


def _use_case_info(name: str) -> dict[str, Any]:
    from models import get_use_case

    try:
        use_case = get_use_case(name)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    spec = use_case.feature_spec(use_case.default_horizon)
    return {
        "series_keys": tuple(spec.series_keys),
        "time_column": spec.time_column,
        "period": spec.period,
    }


def _dtype_name(enum: int) -> str:
    if enum in _DTYPES:
        return _DTYPES[enum][0]
    return f"DataType({enum})"


def _columns(features: Mapping[str, Any] | pd.DataFrame) -> dict[str, np.ndarray]:
    """The feature columns as 1-D numpy arrays (object arrays for text)."""
    try:
        import pandas as pd

        is_frame = isinstance(features, pd.DataFrame)
    except ImportError:  # pragma: no cover - pandas is a dependency of perucast
        is_frame = False
    if is_frame:
        if features.columns.duplicated().any():
            duplicated = sorted(set(features.columns[features.columns.duplicated()]))
            raise ValueError(f"duplicate feature columns {duplicated}")
        return {str(name): features[name].to_numpy() for name in features.columns}
    if not isinstance(features, Mapping):
        raise TypeError(
            f"features must be a mapping of columns or a DataFrame, not {type(features).__name__}"
        )
    columns = {}
    for name, values in features.items():
        if hasattr(values, "to_numpy"):
            values = values.to_numpy()
        array = np.asarray(values)
        if array.ndim != 1:
            raise ValueError(f"feature column {name!r} must be 1-D, got shape {array.shape}")
        columns[str(name)] = array
    return columns


def _encode_inputs(
    columns: Mapping[str, np.ndarray],
    meta: ModelMetadata,
    allowed: set[str],
    ignore_extra: bool,
) -> tuple[dict[str, Any], int]:
    """Checks the columns against the signature; their TensorProtos and the row count."""
    where = f"model {meta.name!r} version {meta.version}"
    missing = [name for name in meta.inputs if name not in columns]
    if missing:
        raise ValueError(f"missing feature columns for {where}: {sorted(missing)}")
    extra = [name for name in columns if name not in meta.inputs and name not in allowed]
    if extra and not ignore_extra:
        raise ValueError(
            f"unknown feature columns for {where}: {sorted(extra)} (the model takes "
            f"{sorted(meta.inputs)}; pass ignore_extra=True to drop them)"
        )
    lengths = {name: len(columns[name]) for name in meta.inputs}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"feature columns have different lengths: {lengths}")
    rows = next(iter(lengths.values()), 0)
    if rows == 0:
        raise ValueError("features have no rows")
    protos = {n: column_to_proto(n, columns[n], kind) for n, kind in meta.inputs.items()}
    return protos, rows


def column_to_proto(name: str, values: Any, dtype: str):
    """A ``[rows]`` TensorProto of one feature column in the signature's dtype.

    Strings are UTF-8 encoded (bytes pass through); numeric dtypes take numbers, numeric strings
    and, for floats, None/NaN/``pd.NA`` as NaN; integer dtypes refuse missing and fractional
    values.

    Raises:
        ValueError: The values do not fit ``dtype``.
    """
    from tensorflow.core.framework import tensor_pb2

    array = _as_1d(values)
    if array.ndim != 1:
        raise ValueError(f"feature column {name!r} must be 1-D, got shape {array.shape}")
    proto = tensor_pb2.TensorProto()
    proto.tensor_shape.dim.add(size=len(array))
    if dtype not in _DTYPE_ENUM:
        raise ValueError(f"feature column {name!r}: input dtype {dtype} is not supported")
    proto.dtype = _DTYPE_ENUM[dtype]
    if dtype == "string":
        proto.string_val.extend(_strings(name, array))
        return proto
    if dtype in ("float32", "float64"):
        numbers = _floats(name, array)
    elif dtype == "bool":
        if array.dtype.kind != "b":
            raise ValueError(f"feature column {name!r} must hold booleans for a bool input")
        numbers = array
    else:
        numbers = _integers(name, array, np.dtype(_DTYPES[proto.dtype][1]))
    proto.tensor_content = np.ascontiguousarray(
        numbers, dtype=np.dtype(_DTYPES[proto.dtype][1]).newbyteorder("<")
    ).tobytes()
    return proto


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(value, float) and math.isnan(value)


def _strings(name: str, array: np.ndarray) -> list[bytes]:
    if array.dtype.kind == "S":
        return array.tolist()
    out = []
    for i, value in enumerate(array.tolist()):
        if isinstance(value, bytes):
            out.append(value)
        elif _is_missing(value):
            raise ValueError(f"feature column {name!r} has a missing value at row {i} (strings)")
        else:
            out.append(str(value).encode())
    return out


def _floats(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "fiub":
        return array.astype(np.float64)
    import pandas as pd

    try:
        numbers = pd.to_numeric(pd.Series(array, dtype=object), errors="raise")
        return numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as err:
        raise ValueError(f"feature column {name!r} must be numeric: {err}") from None


def _integers(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if array.dtype.kind in "iub":
        numbers = array
    else:
        floats = _floats(name, array)
        missing = np.isnan(floats)
        if missing.any():
            raise ValueError(
                f"feature column {name!r} has {int(missing.sum())} missing values, but the "
                f"model takes {dtype.name} codes (first at row {int(np.argmax(missing))})"
            )
        if not np.all(np.isfinite(floats)) or np.any(floats != np.round(floats)):
            raise ValueError(f"feature column {name!r} must hold whole numbers for {dtype.name}")
        numbers = floats
    info = np.iinfo(dtype)
    if len(numbers) and (numbers.min() < info.min or numbers.max() > info.max):
        raise ValueError(f"feature column {name!r} has values out of the {dtype.name} range")
    return numbers.astype(dtype)


def tensor_to_array(proto) -> np.ndarray:
    """A numpy array of a ``TensorProto`` (tensor_content or the typed value fields)."""
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if proto.dtype not in _DTYPES:
        raise ServingClientError(
            grpc.StatusCode.INTERNAL, f"unsupported output dtype {_dtype_name(proto.dtype)}"
        )
    size = int(np.prod(shape)) if shape else 1
    if proto.dtype == _DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    else:
        dtype = np.dtype(_DTYPES[proto.dtype][1]).newbyteorder("<")
        if proto.tensor_content:
            values = np.frombuffer(proto.tensor_content, dtype=dtype)
            return values.astype(dtype.newbyteorder("=")).reshape(shape)
        values = np.asarray(getattr(proto, _VALUE_FIELD[proto.dtype]), dtype=dtype)
    if values.size == size:
        return values.reshape(shape)
    if values.size == 0:
        return np.zeros(shape, dtype=values.dtype)
    # TF's compressed form: the last value repeats to fill the tensor.
    filled = np.concatenate([values, np.repeat(values[-1:], size - values.size)])
    return filled.reshape(shape)
