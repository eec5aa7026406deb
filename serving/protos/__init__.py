"""TensorFlow Serving config protos that the ``tensorflow-serving-api`` wheel does not ship.

The ``.proto`` files here declare messages with the same full names, field names and field
numbers as TensorFlow Serving 2.21 (package ``tensorflow.serving``), so text-format config files
written for ``tensorflow_model_server`` parse unchanged. Their descriptor file names live under
``serving/protos/`` and so never clash with the real ``tensorflow_serving/...`` files.

The ``*_pb2.py``/``*_pb2.pyi`` modules are generated: edit the ``.proto`` files and run
``make protos`` (``tests/test_serving_config.py`` fails when the generated files drift).
"""
