"""Load generation for the serving benchmark (``bench/serving.py``).

- ``payloads``: PredictRequests built from a SavedModel's warm-up records, written as gRPC
  request bodies (h2load) and TF Serving REST JSON (wrk).
- ``h2load``: unary gRPC load over h2c with nghttp2's ``h2load``; latency percentiles from its
  per-request log file.
- ``wrk``: REST load with ``wrk`` and a Lua script (``wrk_post.lua``) whose ``done()`` hook prints
  the latency percentiles as JSON.
- ``grpc_check``: real calls with the official ``PredictionService`` stub (h2load cannot see a
  ``grpc-status`` trailer).
- ``inprocess``: the same PredictRequest run in-process on the SavedModel (no server).
- ``stats``: percentiles.

The TensorFlow-heavy parts (``payloads``, ``grpc_check``, ``inprocess``) run as subprocesses
(``python -m bench.loadgen.NAME``) that print one JSON line, so the bench process itself never
imports TensorFlow and competes with the servers for neither memory nor threads.
"""
