"""Push step: make a blessed candidate a served model version, after a real server proved it.

Used by ``dvc.yaml`` and the pipelines::

    python -m components.push --use-case fish_stock --model models/fish_stock/3 \
        --evaluation reports/evaluation/fish_stock --features data/features/fish_stock \
        --model-repository serving_models --report reports/push/fish_stock

In order, and nothing reaches the repository unless every check passes:

1. **Blessing.** ``<evaluation>/blessing.json`` must say ``blessed``; otherwise nothing is
   pushed and the result says why (the evaluation's reasons). That is an outcome, not an error.
2. **Contract.** The candidate's ``serving_default`` signature (read from ``saved_model.pb``)
   must take exactly the use case's raw inputs (``models.network.input_dtypes`` of the feature
   dataset's statistics) as ``[batch]`` tensors of the right dtypes and return ``p10``, ``p50``
   and ``p90`` as ``[batch, H]`` float32; ``assets.extra/metadata.json`` must agree.
3. **Infra-validation.** The candidate is copied into a throw-away repository as
   ``<tmp>/<name>/1`` and a real ``perucast-model-server`` is started on it
   (``--model_name``/``--model_base_path``, as TF Serving is started). Once the version is
   AVAILABLE, rows of the test split are sent as gRPC Predict requests with the official stubs
   (`serving.client.ForecastClient`) and the answers are compared with the SavedModel run in
   this process on the same rows. The server is always stopped.
4. **Publish.** The candidate is copied into a hidden directory inside
   ``<model_repository>/<name>/`` (servers ignore non-numeric names), its monitoring references
   are added to ``assets.extra/`` (``training_statistics.json`` and, when the feature dataset has
   one, ``reference_sample.parquet`` from ``--features``; ``evaluation.json``, the candidate's
   evaluation-time accuracy from ``--evaluation``: see ``perucast.export``), and the directory is
   renamed to the next free version number, so a server never sees a half-written version.
5. **Report.** ``push.json`` and ``push.md`` in ``--report`` (also when a check failed).

A broken contract, a server that cannot load the model, an RPC error or answers that differ
raise `InfraValidationError` (the CLI exits with `ExitCode.DATA_INVALID` and the reason).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field

from models import USE_CASE_NAMES, UseCaseName

log = logging.getLogger("perucast.push")

BLESSING_FILE = "blessing.json"
REPORT_JSON, REPORT_MD = "push.json", "push.md"
SIGNATURE = "serving_default"  # perucast.export.SIGNATURE (not imported: keeps import light)
PREDICT_METHOD = "tensorflow/serving/predict"
QUANTILES = ("p10", "p50", "p90")
_AVAILABLE, _END = 30, 50  # tensorflow.serving.ModelVersionStatus.State


class InfraValidationError(RuntimeError):
    """The candidate breaks the serving contract or failed in a real model server.

    Attributes:
        reason: The reason without the log (what the report records).
        log_tail: The last lines of the throw-away server's log ("" when no server ran).
    """

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(
            f"{message}\n--- model server log (tail) ---\n{log_tail}" if log_tail else message
        )
        self.reason = message
        self.log_tail = log_tail


class PushConfig(BaseModel):
    """Configuration of the push step (validated when a pipeline is built)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCaseName
    model_dir: Path = Field(description="The candidate's version directory.")
    evaluation_dir: Path = Field(description="The evaluate step's output (blessing.json).")
    features_dir: Path = Field(description="Feature dataset: statistics and test-split requests.")
    model_repository: Path = Field(description="Root of the served <model>/<version>/ dirs.")
    model_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]+$", description="Default: the use case's name."
    )
    infra_validation: bool = Field(default=True, description="Query a real server first.")
    samples: int = Field(default=64, ge=1, le=100_000, description="Test rows sent.")
    request_rows: int = Field(default=16, ge=1, description="Rows per Predict request.")
    rtol: float = Field(default=1e-5, ge=0, description="Server vs in-process, relative.")
    atol: float = Field(default=1e-4, ge=0, description="Server vs in-process, absolute.")
    timeout_s: float = Field(default=180.0, gt=0, description="Server start and load limit.")
    report_dir: Path | None = Field(default=None, description="push.json and push.md go here.")

    @property
    def name(self) -> str:
        return self.model_name or self.use_case


@dataclass
class PushResult:
    """What the push step did.

    Attributes:
        pushed: Whether a new version was published.
        reason: Why (or why not), in one line.
        model_name: The model's directory name in the repository.
        candidate: The candidate's version directory.
        version: The published version number (None when nothing was pushed).
        version_dir: The published version directory.
        infra_validation: Figures of the contract check and the server run.
        monitoring: The monitoring references added to the version: ``files`` (names in
            ``assets.extra/``) and ``evaluation_available``.
        seconds: Wall time of the step.
    """

    pushed: bool
    reason: str
    model_name: str
    candidate: Path
    version: int | None = None
    version_dir: Path | None = None
    infra_validation: dict[str, Any] = field(default_factory=dict)
    monitoring: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pushed": self.pushed,
            "reason": self.reason,
            "model_name": self.model_name,
            "candidate": str(self.candidate),
            "version": self.version,
            "version_dir": str(self.version_dir) if self.version_dir else None,
            "infra_validation": self.infra_validation,
            "monitoring": self.monitoring,
            "seconds": round(self.seconds, 3),
        }


# --- blessing ---------------------------------------------------------------------------------


def read_blessing(evaluation_dir: Path | str) -> dict[str, Any]:
    """The evaluate step's ``blessing.json``.

    Raises:
        FileNotFoundError: No blessing file (the evaluate step did not run or failed).
        ValueError: The file is not a blessing (no boolean ``blessed``).
    """
    path = Path(evaluation_dir) / BLESSING_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {BLESSING_FILE} in {evaluation_dir}: run the evaluate step on the candidate first"
        )
    try:
        blessing = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON: {err}") from None
    if not isinstance(blessing, dict) or not isinstance(blessing.get("blessed"), bool):
        raise ValueError(f"{path} has no boolean 'blessed' field: not a blessing")
    return blessing


def _check_blessing_is_for(blessing: dict[str, Any], model_dir: Path) -> None:
    """Refuse a blessing that was written for another model than the candidate.

    Paths may differ between pipeline pods (artifact mounts), so only a blessed directory that
    exists here and holds a different ``saved_model.pb`` counts as another model.
    """
    blessed = blessing.get("model_dir")
    if not blessed:
        return
    blessed_dir = Path(blessed)
    if blessed_dir.resolve() == model_dir.resolve():
        return
    ours, theirs = model_dir / "saved_model.pb", blessed_dir / "saved_model.pb"
    if theirs.is_file() and ours.is_file() and theirs.read_bytes() != ours.read_bytes():
        raise ValueError(
            f"the blessing was written for {blessed_dir}, a different model than the candidate "
            f"{model_dir}: evaluate the candidate before pushing it"
        )
    log.warning("the blessing names %s; pushing %s (same model)", blessed_dir, model_dir)


# --- contract ---------------------------------------------------------------------------------


def expected_contract(use_case: str, features_dir: Path | str) -> tuple[dict[str, str], int]:
    """The use case's raw inputs (name -> dtype) and horizon, from the feature dataset.

    Raises:
        FileNotFoundError: ``split.json`` or ``statistics.json`` is missing.
    """
    from models import get_use_case
    from models.network import input_dtypes

    features_dir = Path(features_dir)
    for name in ("split.json", "statistics.json"):
        if not (features_dir / name).is_file():
            raise FileNotFoundError(f"{features_dir} is not a feature dataset (no {name})")
    horizon = int(json.loads((features_dir / "split.json").read_text())["horizon"])
    statistics = json.loads((features_dir / "statistics.json").read_text())
    spec = get_use_case(use_case).feature_spec(horizon)
    return input_dtypes(spec, statistics), horizon


def _dtype_name(enum: int) -> str:
    import tensorflow as tf

    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return f"DataType({enum})"


def _dims(info) -> list[int] | None:
    """The shape of a TensorInfo (-1 = unknown dimension), None for an unknown rank."""
    shape = info.tensor_shape
    return None if shape.unknown_rank else [int(d.size) for d in shape.dim]


def check_contract(
    model_dir: Path | str, inputs: dict[str, str], horizon: int, use_case: str | None = None
) -> dict[str, Any]:
    """Check the candidate's ``serving_default`` signature and metadata against the contract.

    Args:
        model_dir: The candidate's version directory.
        inputs: The raw inputs the use case sends (name -> dtype name).
        horizon: H, the width of each quantile output.
        use_case: The use case the metadata must name (None: not checked).

    Returns:
        The signature as seen: ``{"inputs": {name: dtype}, "outputs": {name: [dims]}}``.

    Raises:
        FileNotFoundError: No ``saved_model.pb`` in ``model_dir``.
        InfraValidationError: ``saved_model.pb`` does not parse, or one or more differences
            from the contract (all of them named).
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    model_dir = Path(model_dir)
    pb = model_dir / "saved_model.pb"
    if not pb.is_file():
        raise FileNotFoundError(f"{model_dir} is not a SavedModel (no saved_model.pb)")
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except DecodeError as err:
        raise InfraValidationError(
            f"the candidate {model_dir} cannot be loaded: saved_model.pb does not parse ({err})"
        ) from None
    graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise InfraValidationError(
            f"the candidate {model_dir} cannot be loaded: no MetaGraph tagged 'serve' "
            f"(tags: {[list(g.meta_info_def.tags) for g in saved.meta_graphs]})"
        )
    signatures = graphs[0].signature_def
    if SIGNATURE not in signatures:
        raise InfraValidationError(
            f"the candidate {model_dir} breaks the serving contract: no {SIGNATURE!r} signature "
            f"(signatures: {sorted(k for k in signatures if not k.startswith('__'))})"
        )
    signature = signatures[SIGNATURE]
    seen_inputs = {k: _dtype_name(v.dtype) for k, v in signature.inputs.items()}
    seen_outputs = {k: _dims(v) for k, v in signature.outputs.items()}
    problems: list[str] = []
    if signature.method_name != PREDICT_METHOD:
        problems.append(f"method {signature.method_name!r} is not {PREDICT_METHOD!r}")
    for name in sorted(set(inputs) - set(seen_inputs)):
        problems.append(f"input {name!r} ({inputs[name]}) is missing")
    for name in sorted(set(seen_inputs) - set(inputs)):
        problems.append(f"unexpected input {name!r} ({seen_inputs[name]})")
    for name in sorted(set(inputs) & set(seen_inputs)):
        if seen_inputs[name] != inputs[name]:
            problems.append(f"input {name!r} is {seen_inputs[name]}, expected {inputs[name]}")
        dims = _dims(signature.inputs[name])
        if dims is not None and len(dims) != 1:
            problems.append(f"input {name!r} has shape {dims}, expected [batch]")
    for name in QUANTILES:
        if name not in signature.outputs:
            problems.append(f"output {name!r} is missing")
            continue
        info = signature.outputs[name]
        if _dtype_name(info.dtype) != "float32":
            problems.append(f"output {name!r} is {_dtype_name(info.dtype)}, expected float32")
        dims = seen_outputs[name]
        # The batch dimension may be unknown; H must be known, and equal the dataset's.
        if dims is None or len(dims) != 2 or dims[1] != horizon:
            shown = "unknown" if dims is None else str(dims)
            problems.append(f"output {name!r} has shape {shown}, expected [batch, {horizon}]")

    meta_path = model_dir / "assets.extra" / "metadata.json"
    if not meta_path.is_file():
        problems.append("assets.extra/metadata.json is missing")
    else:
        meta = json.loads(meta_path.read_text())
        if meta.get("inputs") != inputs:
            problems.append("metadata.json 'inputs' differ from the use case's inputs")
        meta_h = meta.get("feature_spec", {}).get("horizon")
        if meta_h != horizon:
            problems.append(f"metadata.json says horizon {meta_h}, the features {horizon}")
        if use_case is not None and meta.get("use_case") not in (None, use_case):
            problems.append(f"metadata.json is for use case {meta.get('use_case')!r}")
    if problems:
        raise InfraValidationError(
            f"the candidate {model_dir} breaks the serving contract of {use_case or 'the model'}: "
            + "; ".join(problems)
        )
    return {"inputs": seen_inputs, "outputs": seen_outputs}


# --- infra-validation -------------------------------------------------------------------------


def sample_rows(features_dir: Path | str, use_case: str, horizon: int, inputs, samples: int):
    """``samples`` rows of the test split, evenly spread over time and series (deterministic)."""
    from models import get_use_case
    from perucast.datasets import read_features

    spec = get_use_case(use_case).feature_spec(horizon)
    keys = [k for k in spec.series_keys if k not in inputs]
    frame = read_features(features_dir, spec, [spec.time_column, *keys, *inputs], ["test"])
    frame = frame.sort_values([spec.time_column, *spec.series_keys]).reset_index(drop=True)
    if samples < len(frame):
        picks = np.unique(np.linspace(0, len(frame) - 1, samples).round().astype(int))
        frame = frame.iloc[picks].reset_index(drop=True)
    return frame


def in_process_outputs(model_dir: Path | str, rows, inputs: dict[str, str]):
    """p10/p50/p90 of the SavedModel loaded in this process for ``rows`` (the reference)."""
    import tensorflow as tf

    from perucast.export import load_serving

    serve = load_serving(model_dir)
    feed = {}
    for name, dtype in inputs.items():
        values = rows[name].to_numpy()
        feed[name] = (
            tf.constant(values.astype(str).astype(object), tf.string)
            if dtype == "string"
            else tf.constant(values.astype(dtype))
        )
    result = serve(**feed)
    return {q: result[q].numpy() for q in QUANTILES}


def _load_error(log_text: str) -> str | None:
    """The servable load error the server logged last ("Loading servable: ... failed: ...")."""
    errors = [ln for ln in log_text.splitlines() if "Loading servable" in ln and "failed:" in ln]
    return errors[-1].split("failed:", 1)[1].strip() if errors else None


def _start_failure(server, timeout: float) -> InfraValidationError:
    """The error for a server that exited (like TF Serving when its first load fails) or hung."""
    tail = server.log_tail()
    code = server.process.poll() if server.process is not None else None
    if code is None:
        return InfraValidationError(
            f"the model server did not open its port in {timeout:.0f}s", tail
        )
    error = _load_error(tail)
    if error:
        return InfraValidationError(
            f"the model server failed to load the candidate (exit code {code}): {error}", tail
        )
    return InfraValidationError(f"the model server exited with {code} while starting", tail)


def _wait_available(server, name: str, deadline: float, timeout: float) -> None:
    """Wait until version 1 of ``name`` is AVAILABLE; fail at once when its load failed."""
    import grpc

    from serving.process import model_state

    last = "no answer yet"
    while True:
        if server.process.poll() is not None:
            raise _start_failure(server, timeout)
        try:
            states = model_state(server.target, name)
            state, error = states.get(1, (None, ""))
            if state == _AVAILABLE:
                return
            if state == _END:
                raise InfraValidationError(
                    f"the model server failed to load the candidate: {error or 'state END'}",
                    server.log_tail(),
                )
            last = repr(states)
        except grpc.RpcError as err:
            last = f"{err.code().name}: {err.details()}"
        if time.monotonic() > deadline:
            raise InfraValidationError(
                f"the candidate was not AVAILABLE within the timeout ({last})", server.log_tail()
            )
        time.sleep(0.2)


def infra_validate(
    config: PushConfig, inputs: dict[str, str], horizon: int, workdir: Path
) -> dict[str, Any]:
    """Serve the candidate from a throw-away repository and check real Predict answers.

    Returns:
        Figures: requests, rows, load seconds, request seconds, max abs/rel diff, mismatches.

    Raises:
        InfraValidationError: The server did not load it, an RPC failed, or answers differ.
    """
    from serving.client import ForecastClient, ServingClientError
    from serving.process import ModelServer, ServerStartError

    name = config.name
    rows = sample_rows(config.features_dir, config.use_case, horizon, inputs, config.samples)
    if rows.empty:
        raise InfraValidationError(f"the test split of {config.features_dir} has no rows")
    base = workdir / "repository" / name
    shutil.copytree(config.model_dir, base / "1")
    server = ModelServer(
        [
            f"--model_name={name}",
            f"--model_base_path={base}",
            # One load attempt, one scan: a failure shows at once instead of after retries.
            "--max_num_load_retries=0",
            "--file_system_poll_wait_seconds=0",
        ],
        log_path=workdir / "server.log",
    )
    started = time.monotonic()
    deadline = started + config.timeout_s
    log.info("infra-validation: starting a model server on %s", base)
    try:
        try:
            server.start(models=(), timeout=config.timeout_s)  # the port only: see below
        except ServerStartError:
            raise _start_failure(server, config.timeout_s) from None
        # Our own wait: ModelServer.wait_ready would sit out the timeout on a failed load.
        _wait_available(server, name, deadline, config.timeout_s)
        load_seconds = time.monotonic() - started
        log.info("infra-validation: version AVAILABLE after %.1fs", load_seconds)

        timeout = max(5.0, deadline - time.monotonic())
        with ForecastClient(server.target, model_name=name, version=1, timeout_s=timeout) as client:
            try:
                served = client.metadata()
            except ServingClientError as err:
                raise InfraValidationError(
                    f"GetModelMetadata failed: {err}", server.log_tail()
                ) from None
            if served.inputs != inputs:
                raise InfraValidationError(
                    f"the server reports inputs {served.inputs}, expected {inputs}",
                    server.log_tail(),
                )
            answers: dict[str, list[np.ndarray]] = {q: [] for q in QUANTILES}
            latencies = []
            for start in range(0, len(rows), config.request_rows):
                part = rows.iloc[start : start + config.request_rows]
                t0 = time.perf_counter()
                try:
                    forecast = client.predict({n: part[n].to_numpy() for n in inputs})
                except (ServingClientError, ValueError) as err:
                    raise InfraValidationError(
                        f"Predict of rows {start}..{start + len(part) - 1} failed: {err}",
                        server.log_tail(),
                    ) from None
                latencies.append(time.perf_counter() - t0)
                for q in QUANTILES:
                    answers[q].append(getattr(forecast, q))
        log_tail = server.log_tail()
    finally:
        code = server.stop()
        log.info("infra-validation: model server stopped (exit code %s)", code)

    served_out = {q: np.concatenate(v) for q, v in answers.items()}
    local = in_process_outputs(config.model_dir, rows, inputs)
    figures = compare(served_out, local, horizon, config.rtol, config.atol)
    figures.update(
        {
            "performed": True,
            "requests": len(latencies),
            "rows": len(rows),
            "rows_per_request": config.request_rows,
            "load_seconds": round(load_seconds, 3),
            "request_seconds": round(sum(latencies), 4),
            "max_request_ms": round(1e3 * max(latencies), 2),
            "served_version": served.version,
        }
    )
    if figures["mismatches"] or figures["non_finite"]:
        raise InfraValidationError(
            f"the server's answers differ from the model run in process: {figures['first_issue']} "
            f"({figures['mismatches']} of {figures['values']} values outside rtol={config.rtol} "
            f"atol={config.atol}; {figures['non_finite']} non-finite)",
            log_tail,
        )
    return figures


def compare(
    served: dict[str, np.ndarray],
    local: dict[str, np.ndarray],
    horizon: int,
    rtol: float,
    atol: float,
) -> dict[str, Any]:
    """Compare server answers with in-process outputs: figures and the first issue found.

    Raises:
        InfraValidationError: An answer does not have the reference's ``[rows, H]`` shape.
    """
    mismatches = non_finite = values = 0
    max_abs = max_rel = 0.0
    first = ""
    for q in QUANTILES:
        s, ref = np.asarray(served[q], dtype=np.float64), np.asarray(local[q], dtype=np.float64)
        if s.shape != ref.shape or s.ndim != 2 or s.shape[1] != horizon:
            raise InfraValidationError(
                f"output {q!r} from the server has shape {list(s.shape)}, "
                f"in process {list(ref.shape)} (expected [rows, {horizon}])"
            )
        bad = ~np.isfinite(s)
        non_finite += int(bad.sum())
        diff = np.abs(s - ref)
        off = ~(diff <= atol + rtol * np.abs(ref))  # NaN counts as off
        mismatches += int(off.sum())
        values += s.size
        finite = np.isfinite(diff)
        if finite.any():
            max_abs = max(max_abs, float(diff[finite].max()))
            rel = diff[finite] / np.maximum(np.abs(ref[finite]), np.finfo(np.float32).tiny)
            max_rel = max(max_rel, float(rel.max()))
        if not first and (off.any() or bad.any()):
            r, h = np.argwhere(off | bad)[0]
            first = f"{q} row {r} horizon {h + 1}: server {s[r, h]!r}, in process {ref[r, h]!r}"
    return {
        "values": values,
        "mismatches": mismatches,
        "non_finite": non_finite,
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "rtol": rtol,
        "atol": atol,
        "first_issue": first or None,
    }


# --- publish ----------------------------------------------------------------------------------


def publish(
    candidate: Path | str,
    model_repository: Path | str,
    name: str,
    extra_assets: Mapping[str, Path | bytes] | None = None,
) -> Path:
    """Copy ``candidate`` to ``<model_repository>/<name>/<next version>``, atomically.

    The copy is made in a hidden sibling (a name servers ignore), ``extra_assets`` are written
    into its ``assets.extra/`` (replacing files of the same name), and it is renamed to 1 + the
    highest version present; when a concurrent push takes that number first, the next one is
    tried. The candidate directory itself is not changed.

    Args:
        candidate: The version directory to publish.
        model_repository: The repository root.
        name: The model's directory name.
        extra_assets: File name -> source file (copied) or content (written), for
            ``assets.extra/`` (the monitoring references, ``perucast.export.monitoring_assets``).

    Returns:
        The new version directory.
    """
    from perucast.export import versions

    model_dir = Path(model_repository) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".push.tmp-", dir=model_dir))
    try:
        shutil.copytree(candidate, tmp, dirs_exist_ok=True)
        extra = tmp / "assets.extra"
        for filename, source in (extra_assets or {}).items():
            extra.mkdir(exist_ok=True)
            if isinstance(source, bytes):
                (extra / filename).write_bytes(source)
            else:
                shutil.copyfile(source, extra / filename)
        # mkdtemp (and copystat from an export's own temp dir) leave 0700: a server running
        # as another user (a TF Serving pod) must be able to read the version.
        os.chmod(tmp, 0o755)
        for _ in range(100):
            target = model_dir / str(max(versions(model_dir), default=0) + 1)
            try:
                # Fails on an existing non-empty directory: a concurrent push took the number.
                os.rename(tmp, target)
                return target
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        raise RuntimeError(f"could not find a free version number under {model_dir}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- the step ---------------------------------------------------------------------------------


def push(config: PushConfig) -> PushResult:
    """Run the push step: blessing, contract, infra-validation, publish, report.

    Returns:
        The result; ``pushed`` is False (with the reason) when the candidate is not blessed.

    Raises:
        FileNotFoundError: No blessing, no SavedModel or no feature dataset.
        ValueError: The blessing is not a blessing, or is for another model; the evaluation's
            scores file is not JSON.
        InfraValidationError: The contract is broken or the server check failed; the report
            (when ``report_dir`` is set) says why, and nothing was pushed.
    """
    started = time.perf_counter()
    model_dir = Path(config.model_dir)
    result = PushResult(pushed=False, reason="", model_name=config.name, candidate=model_dir)
    blessing = read_blessing(config.evaluation_dir)
    if not blessing["blessed"]:
        reasons = [str(r) for r in blessing.get("reasons", [])]
        result.reason = "not blessed: " + ("; ".join(reasons) or "no reasons given")
        result.seconds = time.perf_counter() - started
        log.info("%s: %s; nothing pushed", model_dir, result.reason)
        _report(config, result)
        return result
    _check_blessing_is_for(blessing, model_dir)
    assets = _monitoring_assets(config, result)

    try:
        inputs, horizon = expected_contract(config.use_case, config.features_dir)
        signature = check_contract(model_dir, inputs, horizon, config.use_case)
        log.info(
            "contract: %d inputs, p10/p50/p90 of [batch, %d]: as %s expects",
            len(inputs),
            horizon,
            config.use_case,
        )
        checks: dict[str, Any] = {"contract": "passed", "inputs": len(signature["inputs"])}
        if config.infra_validation:
            with tempfile.TemporaryDirectory(prefix="perucast-push-") as workdir:
                checks.update(infra_validate(config, inputs, horizon, Path(workdir)))
            log.info(
                "infra-validation passed: %d requests, %d rows, max |diff| %.3g",
                checks["requests"],
                checks["rows"],
                checks["max_abs_diff"],
            )
        else:
            checks["performed"] = False
            log.warning("infra-validation skipped (--no-infra-validation)")
    except InfraValidationError as err:
        result.reason = f"infra-validation failed: {err.reason}"
        result.infra_validation = {"performed": config.infra_validation, "error": err.reason}
        result.seconds = time.perf_counter() - started
        log.error("%s; nothing pushed", result.reason)
        _report(config, result)
        raise
    result.infra_validation = checks

    version_dir = publish(model_dir, config.model_repository, config.name, assets)
    result.pushed = True
    result.version = int(version_dir.name)
    result.version_dir = version_dir
    validated = (
        f"infra-validation passed ({checks['requests']} requests, {checks['rows']} rows, "
        f"max |diff| {checks['max_abs_diff']:.3g})"
        if checks.get("performed")
        else "infra-validation skipped"
    )
    result.reason = f"blessed; contract ok; {validated}; pushed as version {result.version}"
    result.seconds = time.perf_counter() - started
    log.info("pushed %s as %s (%.1fs)", model_dir, version_dir, result.seconds)
    _report(config, result)
    return result


def _monitoring_assets(config: PushConfig, result: PushResult) -> dict[str, Path | bytes]:
    """The version's monitoring references (``perucast.export.monitoring_assets``), noted."""
    from perucast.export import EVALUATION_FILE, monitoring_assets

    assets = monitoring_assets(config.features_dir, config.evaluation_dir)
    evaluation = json.loads(assets[EVALUATION_FILE])
    if not evaluation["available"]:
        # Realized accuracy still works without it; only the comparison is lost.
        log.warning("%s: %s is published without scores", evaluation["reason"], EVALUATION_FILE)
    result.monitoring = {
        "files": sorted(assets),
        "evaluation_available": evaluation["available"],
        "evaluation_source": evaluation["source"],
    }
    return assets


def _report(config: PushConfig, result: PushResult) -> None:
    if config.report_dir is None:
        return
    from perucast.io import write_json_atomic, write_text_atomic

    write_json_atomic(Path(config.report_dir) / REPORT_JSON, result.to_dict())
    write_text_atomic(Path(config.report_dir) / REPORT_MD, render_markdown(result))


def render_markdown(result: PushResult) -> str:
    """``push.md``: the decision, its reason and the infra-validation figures."""
    status = f"pushed as version {result.version}" if result.pushed else "NOT pushed"
    lines = [
        f"# Push of {result.model_name}: {status}",
        "",
        f"- candidate: `{result.candidate}`",
        f"- reason: {result.reason}",
    ]
    if result.version_dir is not None:
        lines.append(f"- version directory: `{result.version_dir}`")
    if result.pushed and result.monitoring:
        files = ", ".join(f"`{f}`" for f in result.monitoring["files"])
        scores = "" if result.monitoring["evaluation_available"] else " (no evaluation scores)"
        lines.append(f"- monitoring references in `assets.extra/`: {files}{scores}")
    figures = result.infra_validation
    if figures:
        lines += ["", "## Infra-validation", "", "| figure | value |", "|---|---|"]
        for key, value in figures.items():
            shown = f"{value:.4g}" if isinstance(value, float) else value
            lines.append(f"| {key} | {str(shown).replace('|', '/').splitlines()[0]} |")
    lines.append("")
    lines.append(f"({result.seconds:.1f}s)")
    return "\n".join(lines) + "\n"


# --- CLI --------------------------------------------------------------------------------------


def cli(
    use_case: Annotated[str, typer.Option(help=f"Use case: {', '.join(USE_CASE_NAMES)}.")],
    model_dir: Annotated[Path, typer.Option("--model", help="Candidate version directory.")],
    evaluation_dir: Annotated[
        Path, typer.Option("--evaluation", help="Evaluation output with blessing.json.")
    ],
    features_dir: Annotated[Path, typer.Option("--features", help="Preprocessed features.")],
    model_repository: Annotated[
        Path, typer.Option("--model-repository", help="Root of <model>/<version>/ directories.")
    ],
    model_name: Annotated[str | None, typer.Option(help="Default: the use case.")] = None,
    infra_validation: Annotated[
        bool, typer.Option(help="Check the candidate in a real model server first.")
    ] = True,
    samples: Annotated[int, typer.Option(help="Test rows sent to the server.")] = 64,
    rtol: Annotated[float, typer.Option(help="Relative tolerance, server vs in process.")] = 1e-5,
    atol: Annotated[float, typer.Option(help="Absolute tolerance, server vs in process.")] = 1e-4,
    timeout: Annotated[float, typer.Option(help="Seconds for the server to load it.")] = 180.0,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Where push.json and push.md go.")
    ] = None,
) -> None:
    """Push a blessed model to the model repository after a real server answered correctly."""
    from perucast.exitcodes import ExitCode
    from perucast.logs import setup_logging

    setup_logging()
    try:
        config = PushConfig(
            use_case=use_case,
            model_dir=model_dir,
            evaluation_dir=evaluation_dir,
            features_dir=features_dir,
            model_repository=model_repository,
            model_name=model_name,
            infra_validation=infra_validation,
            samples=samples,
            rtol=rtol,
            atol=atol,
            timeout_s=timeout,
            report_dir=report_dir,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        result = push(config)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.INPUT_NOT_FOUND) from None
    except (InfraValidationError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(ExitCode.DATA_INVALID) from None
    if result.pushed:
        typer.echo(f"{config.name}: pushed as version {result.version} ({result.version_dir})")
    typer.echo(f"{config.name}: {result.reason}")


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
app.command()(cli)

if __name__ == "__main__":
    app()
