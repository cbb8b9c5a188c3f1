"""SageMaker's built-in algorithm images, as the control plane sees them.

- XGBoost (``sagemaker-xgboost:<version>``, every region's account, and the older ``xgboost:1`` /
  ``xgboost:latest``) runs here: its images resolve to ``python -m trainforge.algorithms.xgboost``
  (:data:`XGBOOST_MODULE`), algorithm mode, or script mode when ``sagemaker_program`` is given.
- The others (Linear Learner, k-means, BlazingText, ...) are AWS's closed images: they run only
  where a configured registry serves them; otherwise a job fails with :func:`unavailable_reason`.
- A job on the XGBoost algorithm without MetricDefinitions gets the ones SageMaker adds for it
  (:func:`with_default_metrics`): one per ``train:``/``validation:`` evaluation metric, each
  matching the per-round log line as the logs show it (``[3]#011validation-rmse:0.35``).
"""

from __future__ import annotations

import copy
import re
from typing import Any

XGBOOST_MODULE = "trainforge.algorithms.xgboost"
XGBOOST_REPOSITORIES = ("sagemaker-xgboost", "xgboost")

# Repository names of SageMaker's other built-in algorithms (training images).
OTHER_ALGORITHMS = {
    "linear-learner": "Linear Learner", "kmeans": "k-means", "pca": "PCA", "factorization-machines":
    "Factorization Machines", "ntm": "Neural Topic Model", "lda": "LDA", "randomcutforest": "Random Cut Forest",
    "knn": "k-NN", "object2vec": "Object2Vec", "ipinsights": "IP Insights", "blazingtext": "BlazingText",
    "image-classification": "Image Classification", "object-detection": "Object Detection",
    "semantic-segmentation": "Semantic Segmentation", "forecasting-deepar": "DeepAR", "seq2seq": "Sequence2Sequence",
}

# Evaluation metrics of the XGBoost algorithm, each reported for the train and validation channels.
XGBOOST_METRICS = ("rmse", "mae", "mape", "rmsle", "mphe", "logloss", "error", "merror", "mlogloss", "auc",
                   "aucpr", "ndcg", "map", "poisson-nloglik", "gamma-nloglik", "gamma-deviance",
                   "tweedie-nloglik", "cox-nloglik")
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_ECR = re.compile(r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.(?:amazonaws\.com(?:\.cn)?|c2s\.ic\.gov|sc2s\.sgov\.gov)"
                  r"/(?P<repo>[a-z0-9._/-]+)(?::[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})?$")


def repository(image: str) -> str | None:
    """The ECR repository name of an image URI in AWS's registries, else None."""
    m = _ECR.match(image or "")
    return m.group("repo") if m else None


def is_xgboost(image: str) -> bool:
    return repository(image) in XGBOOST_REPOSITORIES


def is_script_mode(hyperparameters: dict[str, Any] | None, environment: dict[str, Any] | None) -> bool:
    return bool((hyperparameters or {}).get("sagemaker_program") or (environment or {}).get("SAGEMAKER_PROGRAM"))


def unavailable_reason(image: str) -> str | None:
    """Why a built-in algorithm's image (other than XGBoost) cannot run here; None for other images."""
    name = OTHER_ALGORITHMS.get(repository(image) or "")
    if name is None:
        return None
    return (f"The built-in algorithm {name} ({image}) ships only as AWS's own image, and no configured "
            f"registry serves it here. The built-in algorithms that run on trainforge without its image: "
            f"XGBoost (the sagemaker-xgboost images, algorithm and script mode); the framework images run "
            f"in script mode.")


def xgboost_metric_definitions() -> list[dict[str, str]]:
    return [{"Name": f"{channel}:{metric}", "Regex": rf".*\[[0-9]+\].*#011{channel}-{re.escape(metric)}:{_NUMBER}.*"}
            for metric in XGBOOST_METRICS for channel in ("train", "validation")]


def with_default_metrics(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with the XGBoost algorithm's MetricDefinitions when it runs the algorithm (its
    image, no script) and names none; otherwise ``request`` itself."""
    spec = request.get("AlgorithmSpecification") or {}
    if (spec.get("MetricDefinitions") or not is_xgboost(spec.get("TrainingImage") or "")
            or is_script_mode(request.get("HyperParameters"), request.get("Environment"))):
        return request
    out = copy.deepcopy(request)
    out["AlgorithmSpecification"]["MetricDefinitions"] = xgboost_metric_definitions()
    return out
