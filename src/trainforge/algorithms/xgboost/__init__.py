"""SageMaker's built-in XGBoost algorithm (algorithm mode of the ``sagemaker-xgboost`` images) on the
``xgboost`` package: ``python -m trainforge.algorithms.xgboost train``.

- ``hyperparameters.py``: the documented hyperparameters, their defaults and ranges, parsed from
  the string forms the SDKs and the console send; errors in the container's words.
- ``data.py``: the channels (File or Pipe) in text/csv, text/libsvm, application/x-parquet.
- ``train.py``: the boosting loop, the per-round log lines, checkpoints and resume, the model.
- ``collective.py``: several instances training one model through XGBoost's collective.
"""
