"""Model lifecycle like TensorFlow Serving's ServerCore: versions on disk -> loaded servables.

For every model of the `ModelServerConfig`, the numeric directories under its base path are the
candidate versions; the version policy (`latest {num_versions}` (default 1), `all`, `specific`)
picks the aspired ones; aspired versions are loaded (and warmed up) before they become
AVAILABLE, and versions that stop being aspired are unloaded only once an aspired version is
available (TF Serving's availability-preserving policy), so a model never goes dark because a
new version failed to load. A failed version is retried `max_num_load_retries` times, then
reported with its error in GetModelStatus (state END) while the previous version keeps serving.

Requests never take the manager's lock: they read immutable snapshots that loads and unloads
replace, and hold a reference-counted handle so that a version unloaded mid-request finishes it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import prediction_log
from serving.errors import ServingError, failed_precondition, invalid_argument, not_found
from serving.servable import Servable

log = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State
TENSORFLOW_PLATFORM = "tensorflow"

# on_event(kind, model, version, seconds, error): "load", "unload", "load_failure".
EventHook = Callable[[str, str, int, float, str], None]


@dataclass(frozen=True)
class ManagerOptions:
    """Lifecycle options, from the flags of the same names."""

    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    saved_model_tags: frozenset[str] = frozenset({"serve"})


@dataclass
class VersionStatus:
    """The state of one version as GetModelStatus reports it."""

    state: int
    error: ServingError | None = None


@dataclass
class _Handle:
    """A loaded servable and the requests currently using it."""

    servable: Servable
    inflight: int = 0
    retired: bool = False  # unloaded: no longer in the serving snapshot
    closed: bool = False  # closed: a request must never start on it again
    lock: threading.Lock = field(default_factory=threading.Lock)


def scan_versions(base_path: str) -> dict[int, Path]:
    """Numeric version directories under `base_path` (hidden and non-numeric names ignored)."""
    base = Path(base_path)
    if not base.is_dir():
        return {}
    found = {}
    for child in base.iterdir():
        if child.name.isdigit() and child.is_dir():
            found[int(child.name)] = child
    return found


def aspired_versions(
    config: model_server_config_pb2.ModelConfig, present: dict[int, Path]
) -> set[int]:
    """The versions the model's version policy wants loaded, among those present."""
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(present)
    if choice == "specific":
        return {v for v in policy.specific.versions if v in present}
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
    return set(sorted(present)[-count:])


def validate_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """The checks TF Serving makes before it accepts a config (ServerCore::ReloadConfig)."""
    kind = config.WhichOneof("config")
    if kind == "custom_model_config":
        raise failed_precondition("custom_model_config is not supported by perucast-model-server")
    names: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise invalid_argument("Model name is required in every ModelConfig")
        if model.name in names:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        names.add(model.name)
        if not model.base_path:
            raise invalid_argument(f"Model {model.name} has no base_path")
        platform = model.model_platform or TENSORFLOW_PLATFORM
        if platform != TENSORFLOW_PLATFORM:
            raise invalid_argument(
                f"Model {model.name}: model_platform {platform!r} is not supported "
                f"(only {TENSORFLOW_PLATFORM!r})"
            )
        logging_error = prediction_log.logging_config_error(model)
        if logging_error:
            raise invalid_argument(logging_error)


def _error_code(exc: Exception) -> grpc.StatusCode:
    """The canonical code of a load failure (TensorFlow's own when it has one, else UNKNOWN)."""
    if isinstance(exc, ServingError):
        return exc.code
    by_value = {code.value[0]: code for code in grpc.StatusCode}
    code = by_value.get(getattr(exc, "error_code", None))
    return code if code not in (None, grpc.StatusCode.OK) else grpc.StatusCode.UNKNOWN


class ModelManager:
    """Loads, serves and unloads model versions following a ModelServerConfig.

    Args:
        options: Lifecycle options.
        on_event: Called on load, unload and load failure (metrics and logs).
        on_config: Called with the new {name: ModelConfig} when a config is accepted, before
            models are added or removed (the prediction logger follows it); may raise
            ServingError to refuse the config.
    """

    def __init__(
        self,
        options: ManagerOptions | None = None,
        on_event: EventHook | None = None,
        on_config: Callable[[dict[str, model_server_config_pb2.ModelConfig]], None] | None = None,
    ):
        self.options = options or ManagerOptions()
        self._on_event = on_event
        self._on_config = on_config
        self._lock = threading.RLock()  # serializes config changes and polls
        self._models: dict[str, model_server_config_pb2.ModelConfig] = {}
        # Snapshots read without the lock; replaced (never mutated) under it.
        self._serving: dict[str, dict[int, _Handle]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._failed: set[tuple[str, int]] = set()
        self._configured = False  # the first config is loaded before its labels are checked
        self._generation = 0  # bumped by every config change: a poll of an older config stops
        self._loading: set[tuple[str, int]] = set()  # loads in progress (maybe between retries)
        self._config_changed = threading.Condition()  # wakes loads waiting to retry
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # --- configuration -----------------------------------------------------------------

    @property
    def model_names(self) -> list[str]:
        return list(self._models)

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Switches to `config`: checks its version labels, then adds, updates and removes models.

        As in TF Serving's ServerCore::ReloadConfig, the labels are checked against the versions
        available *before* the change, and a label that fails leaves everything as it was: a
        version cannot be loaded and labelled in one change. (Only the very first config, at
        start-up, is loaded before its labels are checked, where TF Serving would refuse every
        label without --allow_version_labels_for_unavailable_models.)

        Blocks until the configured models' aspired versions are loaded (or failed), like TF
        Serving's config reload.

        Raises:
            ServingError: the config is invalid; FAILED_PRECONDITION when a label points at a
                version that is not available; UNKNOWN "N model(s) did not become available"
                when a model new to the config has no version that loaded.
        """
        validate_config(config)
        with self._lock:
            new_models = {m.name: m for m in config.model_config_list.config}
            first = not self._configured
            if not first:
                labels = self._new_labels(new_models)
            added = [name for name in new_models if name not in self._models]
            if self._on_config is not None:
                self._on_config(new_models)
            for name in set(self._models) - set(new_models):
                log.info("model %s removed from the config: unloading it", name)
                for version in list(self._serving.get(name, {})):
                    self._unload(name, version)
                self._failed = {(n, v) for n, v in self._failed if n != name}
            self._models = new_models
            self._configured = True
            self._generation += 1
            generation = self._generation
            with self._config_changed:
                self._config_changed.notify_all()
            self._poll_locked()
            if self._generation != generation:
                return  # a newer config came in while a load here waited to retry: it rules
            if first:
                labels = self._new_labels(new_models)
            self._labels = labels
            self._check_available(added)

    def _new_labels(
        self, models: dict[str, model_server_config_pb2.ModelConfig]
    ) -> dict[str, dict[str, int]]:
        """The label map of `models` (ServerCore::UpdateModelVersionLabelMap's checks)."""
        new: dict[str, dict[str, int]] = {}
        for name, model in models.items():
            current = self._labels.get(name, {})
            available = self._serving.get(name, {})
            for label, version in model.version_labels.items():
                # The flag lets a label point at an unavailable version unless that label
                # already exists with another version (moving a live label stays checked).
                allow_unavailable = (
                    self.options.allow_version_labels_for_unavailable_models
                    and current.get(label, version) == version
                )
                if version not in available and not allow_unavailable:
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model {name}, which "
                        "is not currently available for inference"
                    )
                new.setdefault(name, {})[label] = version
        return new

    def _check_available(self, names: list[str]) -> None:
        """ServerCore::WaitUntilModelsAvailable for the models a reload added."""
        failed = []
        for name in names:
            if self._serving.get(name):
                continue
            for version, status in sorted(self._status.get(name, {}).items()):
                if status.state == State.END and status.error is not None:
                    failed.append(
                        f"{{{{name: {name} version: {version}}} due to error: "
                        f"{status.error.code.name}: {status.error.message}}}, "
                    )
        if failed:
            raise ServingError(
                grpc.StatusCode.UNKNOWN,
                f"{len(failed)} model(s) did not become available: {{{''.join(failed)}}}",
            )

    # --- polling -------------------------------------------------------------------------

    def poll(self) -> None:
        """Scans every base path once and loads / unloads to match the version policies."""
        with self._lock:
            self._poll_locked()

    def start_polling(self) -> None:
        """Polls every `file_system_poll_wait_seconds` in a thread (0: never again, as in TF)."""
        interval = self.options.file_system_poll_wait_seconds
        if interval <= 0 or self._poller is not None:
            return
        self._poller = threading.Thread(
            target=self._poll_loop, args=(interval,), name="fs-poll", daemon=True
        )
        self._poller.start()

    def _poll_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.poll()
            except Exception:  # a poll must never kill the poller; the next one retries
                log.exception("file-system poll failed")

    def _poll_locked(self) -> None:
        generation = self._generation
        for name, model in self._models.items():
            if self._generation != generation:
                return  # a config change came in while a load waited to retry: its poll rules
            if not Path(model.base_path).is_dir():
                # TF Serving's poll fails for this servable and changes nothing.
                log.error(
                    "FileSystemStoragePathSource encountered a filesystem access error: Could "
                    "not find base path %s for servable %s",
                    model.base_path,
                    name,
                )
                continue
            present = scan_versions(model.base_path)
            if not present and (self._serving.get(name) or not self._status.get(name)):
                log.warning(
                    "No versions of servable %s found under base path %s. Did you forget to "
                    "name your leaf directory as a number (eg. '/1/')?",
                    name,
                    model.base_path,
                )
            self._failed = {(n, v) for n, v in self._failed if n != name or v in present}
            aspired = aspired_versions(model, present)
            # AvailabilityPreservingPolicy: the highest new aspired version loads first ...
            for version in sorted(aspired, reverse=True):
                if version in self._serving.get(name, {}) or (name, version) in self._failed:
                    continue
                if (name, version) in self._loading:
                    continue  # another poll is loading it (waiting to retry)
                self._load(name, version, present[version])
                if self._generation != generation:
                    return
            # ... and a version no longer aspired is unloaded once an aspired one serves, or
            # when nothing is aspired any more (an empty base path, as TF Serving does by
            # default), or while more than one un-aspired version serves (lowest first).
            serving = self._serving.get(name, {})
            unaspired = sorted(v for v in serving if v not in aspired)
            if not aspired or any(v in serving for v in aspired):
                doomed = unaspired
            else:
                doomed = unaspired[:-1]
            for version in doomed:
                self._unload(name, version)

    # --- load / unload -------------------------------------------------------------------

    def _set_status(self, name: str, version: int, status: VersionStatus) -> None:
        model = dict(self._status.get(name, {}))
        model[version] = status
        self._status = {**self._status, name: model}

    def _still_aspired(self, name: str, version: int) -> bool:
        model = self._models.get(name)
        if model is None or not Path(model.base_path).is_dir():
            return False
        return version in aspired_versions(model, scan_versions(model.base_path))

    def _wait_to_retry(self, name: str, version: int) -> bool:
        """Waits the retry interval *without* the manager lock; False: give up retrying.

        Holding the lock through the interval would block every config reload behind a broken
        version for retries x interval (5 minutes with TF Serving's defaults), and with it a
        deploy's rollback. TF Serving retries asynchronously too, and cancels the retries of a
        version a new config no longer aspires: a config change wakes this wait, and the
        version stops retrying once it is not aspired (False) or the server stops.
        """
        depth = 0
        while True:  # release the RLock fully (the caller may hold it more than once)
            try:
                self._lock.release()
            except RuntimeError:
                break
            depth += 1
        deadline = time.monotonic() + max(0.0, self.options.load_retry_interval_seconds)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if self._stop.is_set():
                    return False
                if remaining <= 0:
                    return True
                with self._config_changed:
                    woken = self._config_changed.wait(remaining)
                if woken:
                    with self._lock:
                        if not self._still_aspired(name, version):
                            return False
        finally:
            for _ in range(depth):
                self._lock.acquire()

    def _load(self, name: str, version: int, path: Path) -> None:
        self._loading.add((name, version))
        try:
            self._load_with_retries(name, version, path)
        finally:
            self._loading.discard((name, version))

    def _load_with_retries(self, name: str, version: int, path: Path) -> None:
        self._set_status(name, version, VersionStatus(State.LOADING))
        attempts = 1 + max(0, self.options.max_num_load_retries)
        started = time.perf_counter()
        error, code = "", grpc.StatusCode.UNKNOWN
        for attempt in range(attempts):
            if attempt:
                if not self._wait_to_retry(name, version) and self._stop.is_set():
                    break
                if not self._still_aspired(name, version):
                    log.info("load of %s version %d cancelled: no longer aspired", name, version)
                    self._set_status(
                        name,
                        version,
                        VersionStatus(
                            State.END,
                            ServingError(
                                grpc.StatusCode.CANCELLED,
                                f"Load of {name} version {version} cancelled: the version is "
                                "no longer aspired",
                            ),
                        ),
                    )
                    return
                log.info("retrying load of %s version %d (attempt %d)", name, version, attempt + 1)
            servable = None
            try:
                servable = Servable.load(name, version, path, self.options.saved_model_tags)
                if self.options.enable_model_warmup:
                    servable.warmup(self.options.num_request_iterations_for_warmup)
            except Exception as exc:
                code = _error_code(exc)
                error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
                log.error(
                    "Loading servable: {name: %s version: %d} failed: %s", name, version, error
                )
                if servable is not None:
                    servable.close()
                continue
            self._serving = {
                **self._serving,
                name: {**self._serving.get(name, {}), version: _Handle(servable)},
            }
            self._set_status(name, version, VersionStatus(State.AVAILABLE))
            seconds = time.perf_counter() - started
            log.info(
                "Successfully loaded servable version {name: %s version: %d} in %.2f s",
                name,
                version,
                seconds,
            )
            self._event("load", name, version, seconds, "")
            return
        self._failed.add((name, version))
        self._set_status(
            name,
            version,
            VersionStatus(State.END, ServingError(code, error)),
        )
        self._event("load_failure", name, version, time.perf_counter() - started, error)

    def _unload(self, name: str, version: int) -> None:
        handle = self._serving.get(name, {}).get(version)
        if handle is None:
            return
        self._set_status(name, version, VersionStatus(State.UNLOADING))
        remaining = {v: h for v, h in self._serving[name].items() if v != version}
        self._serving = {**self._serving, name: remaining}
        with handle.lock:
            handle.retired = True
            idle = handle.inflight == 0
            handle.closed = idle
        if idle:
            handle.servable.close()
        # else: the last request to release it closes it (see handle()).
        self._set_status(name, version, VersionStatus(State.END))
        log.info("Unloaded servable version {name: %s version: %d}", name, version)
        self._event("unload", name, version, 0.0, "")

    def _event(self, kind: str, name: str, version: int, seconds: float, error: str) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, name, version, seconds, error)
            except Exception:
                log.exception("event hook failed")

    # --- requests ------------------------------------------------------------------------

    def resolve_version(self, spec: model_pb2.ModelSpec) -> tuple[str, int | None]:
        """(name, version or None for latest) of a ModelSpec; labels resolved."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.name, spec.version.value
        if choice == "version_label":
            version = self._labels.get(spec.name, {}).get(spec.version_label)
            if version is None:
                raise invalid_argument(f"Unrecognized servable version label: {spec.version_label}")
            return spec.name, version
        return spec.name, None

    @contextlib.contextmanager
    def handle(self, spec: model_pb2.ModelSpec) -> Iterator[Servable]:
        """The servable a request targets, kept alive (not closed) until the request ends.

        Raises:
            ServingError: NOT_FOUND "Servable not found for request: ..." as TF Serving words it;
                INVALID_ARGUMENT for an unknown label or a spec without a name.
        """
        name, version = self.resolve_version(spec)
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        while True:
            versions = self._serving.get(name, {})
            if version is None:
                handle = versions[max(versions)] if versions else None
            else:
                handle = versions.get(version)
            if handle is None:
                raise not_found(f"Servable not found for request: {request}")
            with handle.lock:
                if not handle.closed:
                    handle.inflight += 1
                    break
            # Unloaded and closed between the snapshot read and the acquire: it has already
            # left the snapshot, so reading it again finds its successor (or nothing).
        try:
            yield handle.servable
        finally:
            with handle.lock:
                handle.inflight -= 1
                close = handle.retired and handle.inflight == 0 and not handle.closed
                if close:
                    handle.closed = True
            if close:
                threading.Thread(target=handle.servable.close, daemon=True).start()

    def model_status(
        self, spec: model_pb2.ModelSpec
    ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """GetModelStatus: every version the manager has seen for the model (or the one asked)."""
        name, version = self.resolve_version(spec)
        statuses = self._status.get(name, {})
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            statuses = {version: statuses[version]}
        result = []
        for number in sorted(statuses, reverse=True):
            status = statuses[number]
            entry = get_model_status_pb2.ModelVersionStatus(version=number, state=status.state)
            entry.status.SetInParent()  # TF Serving always reports a status (OK when no error)
            if status.error is not None:
                entry.status.error_code = status.error.code.value[0]
                entry.status.error_message = status.error.message
            result.append(entry)
        return result

    def available(self) -> dict[str, list[int]]:
        """The versions serving now, by model."""
        return {name: sorted(versions) for name, versions in self._serving.items() if versions}

    def all_available(self) -> bool:
        """True when every configured model has at least one available version."""
        return all(self._serving.get(name) for name in self._models)

    def stop(self) -> None:
        """Stops polling and unloads everything (after requests in flight)."""
        self._stop.set()
        with self._config_changed:
            self._config_changed.notify_all()  # loads waiting to retry give up now
        if self._poller is not None:
            self._poller.join(timeout=30)
        with self._lock:
            for name in list(self._serving):
                for version in list(self._serving.get(name, {})):
                    self._unload(name, version)
