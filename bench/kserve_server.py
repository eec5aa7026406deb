"""KServe baseline for the serving benchmark: the crop_demand SavedModel behind ``kserve``.

Runs inside its own virtualenv (``bench/_work/kserve-venv``, made by
``bench.serving.ensure_kserve_venv``: kserve 0.21.0, tensorflow 2.21.0), never in perucast's.
A ``kserve.Model`` whose ``load()`` loads the SavedModel with ``tf.saved_model.load`` and takes
its ``serving_default`` signature; ``predict()`` takes KServe's v1 payload (TF Serving's row
format, ``{"instances": [{input: value, ...}, ...]}``), converts each input to a tensor of the
signature's dtype, runs the signature and returns ``{"predictions": [{output: value, ...}, ...]}``
(for crop_demand: per instance, p10/p50/p90 lists of 12): the work perucast's server does for a
REST predict.

    python bench/kserve_server.py --model_dir VERSION_DIR --model_name crop_demand \
        --http_port 8080 --grpc_port 8081 --workers 2

Configuration (kserve 0.21's ``ModelServer``): ``workers`` uvicorn processes for REST
(``workers > 1`` is KServe's multi-processing: ``RESTServerMultiProcess`` spawns that many
processes sharing the listening socket; the model is pickled into each, and this model's
``__setstate__`` re-loads the SavedModel there, since TF objects do not pickle). The v2 gRPC
server runs in the parent process only. ``predict`` is synchronous, like KServe's own model
servers' (sklearn, xgboost): it runs on the worker's event loop, one request at a time per
process. Per-request logging (uvicorn access log, KServe's timing trace and latency log) is off:
both servers in the comparison log nothing per request.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kserve
import kserve.logging
import kserve.model_server
import numpy as np


class SavedModelPredictor(kserve.Model):
    def __init__(self, name: str, model_dir: str, signature: str = "serving_default") -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.signature_name = signature
        self._model: Any = None
        self._signature: Any = None
        self._input_dtypes: dict[str, Any] = {}

    def load(self) -> bool:
        import tensorflow as tf

        self._model = tf.saved_model.load(self.model_dir)
        self._signature = self._model.signatures[self.signature_name]
        _, specs = self._signature.structured_input_signature
        self._input_dtypes = {name: spec.dtype for name, spec in specs.items()}
        self.ready = True
        return self.ready

    # workers > 1: KServe pickles the registered model into each spawned REST process.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_model=None, _signature=None, _input_dtypes={}, ready=False)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        import tensorflow as tf

        if isinstance(payload, (bytes, bytearray)):
            payload = json.loads(payload)
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise kserve.errors.InvalidInput('expected {"instances": [{input: value, ...}, ...]}')
        tensors = {}
        for name, dtype in self._input_dtypes.items():
            try:
                values = [instance[name] for instance in instances]
            except (KeyError, TypeError) as e:
                raise kserve.errors.InvalidInput(f"instance without input {e}") from None
            if dtype == tf.string:
                tensors[name] = tf.constant(values, dtype=tf.string)
            else:
                tensors[name] = tf.constant(np.asarray(values, dtype=dtype.as_numpy_dtype))
        outputs = {k: v.numpy() for k, v in self._signature(**tensors).items()}
        names = sorted(outputs)
        return {
            "predictions": [
                {name: outputs[name][i].tolist() for name in names} for i in range(len(instances))
            ]
        }


def _quiet_log_config() -> str:
    """KServe's log configuration with the per-request loggers at WARNING, as a JSON file.

    A file because ``workers > 1`` spawns processes that configure logging from
    ``args.log_config_file``.
    """
    config = copy.deepcopy(kserve.logging.KSERVE_LOG_CONFIG)
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    config["loggers"]["kserve.trace"]["level"] = "WARNING"
    fd, path = tempfile.mkstemp(prefix="kserve-log-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="KServe baseline for the serving benchmark")
    parser.add_argument("--model_dir", required=True, help="SavedModel (version) directory")
    parser.add_argument("--model_name", default="crop_demand")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--workers", type=int, default=1)
    args, _ = parser.parse_known_args(argv)

    log_config = _quiet_log_config()
    kserve.model_server.args.log_config_file = log_config
    kserve.logging.configure_logging(log_config)
    model = SavedModelPredictor(args.model_name, str(Path(args.model_dir).resolve()))
    model.load()
    kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_latency_logging=False,
    ).start([model])


if __name__ == "__main__":
    sys.exit(main())
