"""Pipeline steps, generic over use cases.

Each step is a plain typed function (paths and a config in, a result out), a CLI
(``python -m components.<step>``, used by dvc.yaml and by pods), and later a thin KFP wrapper.
"""
