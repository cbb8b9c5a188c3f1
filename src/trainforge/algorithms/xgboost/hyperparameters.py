"""The hyperparameters of SageMaker's XGBoost algorithm: names, types, defaults and ranges.

Values arrive as strings (``hyperparameters.json`` is string → string): ``"0.2"``,
``"reg:squarederror"``, or JSON-encoded by some clients (``"\\"reg:squarederror\\""``); both forms
are accepted. An invalid value, an unknown name or a missing ``num_round`` raises
:class:`HyperparameterError` with a message in the container's form (``Hyperparameter eta: value
2.0 not in range [0, 1]``). Names starting with ``sagemaker_`` or ``_`` (the SDK's and automatic
model tuning's own, such as ``_tuning_objective_metric``) are accepted and not passed on.

Only the standard library is imported here: the control plane reads the table too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INF = math.inf
# Hyperparameters of the platform, not of the algorithm: the SDK's (sagemaker_program, ...) and
# automatic model tuning's (_tuning_objective_metric).
PLATFORM_PREFIXES = ("sagemaker_", "_")


class HyperparameterError(ValueError):
    """A hyperparameter the algorithm cannot use (the job fails with this message)."""


@dataclass(frozen=True)
class Param:
    """One hyperparameter: ``kind`` is int, float, str, or list (comma-separated strings)."""

    name: str
    kind: str
    default: Any = None
    low: float = -INF
    high: float = INF
    open_low: bool = False  # the range excludes ``low``
    open_high: bool = False
    choices: tuple[str, ...] = ()
    required: bool = False
    booster: bool = True  # passed on to xgboost's params (False: the algorithm's own)
    valid_item: Callable[[str], bool] | None = None  # a list's items: checked by this, not ``choices``

    def range_text(self) -> str:
        def end(v: float) -> str:
            return "inf" if v == INF else "-inf" if v == -INF else f"{v:g}"
        return (("(" if self.open_low or self.low == -INF else "[") + f"{end(self.low)}, {end(self.high)}"
                + (")" if self.open_high or self.high == INF else "]"))

    def parse(self, raw: str) -> Any:
        text = _unquote(raw)
        value: Any
        if self.kind in ("int", "float"):
            what = "an integer" if self.kind == "int" else "a number"
            try:
                value = float(text)
            except ValueError:
                raise HyperparameterError(f"Hyperparameter {self.name}: could not parse value {raw!r} "
                                          f"as {what}") from None
            if math.isnan(value) or (self.kind == "int" and not value.is_integer()):
                raise HyperparameterError(f"Hyperparameter {self.name}: value {raw!r} is not {what}")
            if self.kind == "int":
                value = int(value)
        elif self.kind == "list":
            value = [v.strip() for v in text.split(",") if v.strip()]
            ok = self.valid_item or (lambda v: not self.choices or v in self.choices)
            if not value or not all(ok(v) for v in value):
                raise HyperparameterError(f"Hyperparameter {self.name}: value {raw!r} not in "
                                          f"{', '.join(self.choices) or 'a comma-separated list'}")
            return value
        else:
            value = text
        if self.choices and str(value) not in self.choices:
            raise HyperparameterError(f"Hyperparameter {self.name}: value {raw!r} not in the allowed values: "
                                      f"{', '.join(self.choices)}")
        if self.kind in ("int", "float"):
            too_low = value < self.low or (self.open_low and value == self.low)
            too_high = value > self.high or (self.open_high and value == self.high)
            if too_low or too_high:
                raise HyperparameterError(f"Hyperparameter {self.name}: value {text} not in range "
                                          f"{self.range_text()}")
        return value


def _unquote(raw: str) -> str:
    """``"\\"x\\""`` → ``x`` (a JSON string, as the SDK's framework estimators send); else as given."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        if isinstance(decoded, str):
            return decoded.strip()
    return text


OBJECTIVES = (
    "reg:squarederror", "reg:squaredlogerror", "reg:logistic", "reg:pseudohubererror", "reg:absoluteerror",
    "reg:quantileerror", "reg:gamma", "reg:tweedie", "reg:linear", "binary:logistic", "binary:logitraw",
    "binary:hinge", "count:poisson", "survival:cox", "survival:aft", "multi:softmax", "multi:softprob",
    "rank:pairwise", "rank:ndcg", "rank:map",
)
EVAL_METRICS = (
    "rmse", "rmsle", "mae", "mape", "mphe", "logloss", "error", "merror", "mlogloss", "auc", "aucpr", "ndcg",
    "map", "poisson-nloglik", "gamma-nloglik", "cox-nloglik", "gamma-deviance", "tweedie-nloglik",
    "aft-nloglik", "interval-regression-accuracy", "pre",
)
_RANKED = ("ndcg", "map", "pre")  # take a cut-off ``@n`` (and ``ndcg``/``map`` a trailing ``-``)


def _eval_metric_ok(metric: str) -> bool:
    """xgboost's metric names with their arguments: ``error@0.7``, ``ndcg@5``, ``map@3-``, ``ndcg-``."""
    base, at, arg = metric.partition("@")
    if not at:
        return metric in EVAL_METRICS or (metric.endswith("-") and metric[:-1] in ("ndcg", "map"))
    if base == "error":
        try:
            return math.isfinite(float(arg))
        except ValueError:
            return False
    if base in _RANKED:
        cut = arg[:-1] if arg.endswith("-") and base != "pre" else arg
        return cut.isdigit()
    return False


def _fraction(name: str) -> Param:
    """A sampling ratio: (0, 1], default 1."""
    return Param(name, "float", 1.0, low=0.0, high=1.0, open_low=True)


TABLE: dict[str, Param] = {p.name: p for p in (
    Param("num_round", "int", low=1, required=True, booster=False),
    Param("num_class", "int", low=1),
    Param("early_stopping_rounds", "int", low=1, booster=False),
    Param("csv_weights", "int", 0, choices=("0", "1"), booster=False),
    Param("save_model_on_termination", "str", "false", choices=("true", "false"), booster=False),
    Param("alpha", "float", 0.0, low=0.0),
    Param("base_score", "float", 0.5),
    Param("booster", "str", "gbtree", choices=("gbtree", "gblinear", "dart")),
    _fraction("colsample_bylevel"),
    _fraction("colsample_bynode"),
    _fraction("colsample_bytree"),
    Param("eta", "float", 0.3, low=0.0, high=1.0),
    Param("eval_metric", "list", choices=EVAL_METRICS, valid_item=_eval_metric_ok),
    Param("gamma", "float", 0.0, low=0.0),
    Param("grow_policy", "str", "depthwise", choices=("depthwise", "lossguide")),
    Param("interaction_constraints", "str"),
    Param("lambda", "float", 1.0, low=0.0),
    Param("lambda_bias", "float", 0.0, low=0.0, high=1.0, booster=False),
    Param("max_bin", "int", 256, low=2),
    Param("max_cat_to_onehot", "int", low=1),
    Param("max_delta_step", "float", 0.0, low=0.0),
    Param("max_depth", "int", 6, low=0),
    Param("max_leaves", "int", 0, low=0),
    Param("min_child_weight", "float", 1.0, low=0.0),
    Param("monotone_constraints", "str"),
    Param("normalize_type", "str", "tree", choices=("tree", "forest")),
    Param("nthread", "int", low=1),
    Param("num_parallel_tree", "int", 1, low=1),
    Param("objective", "str", "reg:squarederror", choices=OBJECTIVES),
    Param("one_drop", "int", 0, choices=("0", "1")),
    Param("process_type", "str", "default", choices=("default", "update")),
    Param("rate_drop", "float", 0.0, low=0.0, high=1.0),
    Param("refresh_leaf", "int", 1, choices=("0", "1")),
    Param("sample_type", "str", "uniform", choices=("uniform", "weighted")),
    Param("sampling_method", "str", "uniform", choices=("uniform", "gradient_based")),
    Param("scale_pos_weight", "float", 1.0, low=0.0, open_low=True),
    Param("seed", "int", 0),
    Param("sketch_eps", "float", 0.03, low=0.0, high=1.0, open_low=True, open_high=True, booster=False),
    Param("skip_drop", "float", 0.0, low=0.0, high=1.0),
    _fraction("subsample"),
    Param("tree_method", "str", "auto", choices=("auto", "exact", "approx", "hist", "gpu_hist")),
    Param("tweedie_variance_power", "float", 1.5, low=1.0, high=2.0, open_low=True, open_high=True),
    Param("updater", "str"),
    Param("verbosity", "int", 1, low=0, high=3),
    Param("huber_slope", "float", 1.0, low=0.0, open_low=True),
    Param("quantile_alpha", "float", low=0.0, high=1.0, open_low=True, open_high=True),
    Param("aft_loss_distribution", "str", "normal", choices=("normal", "logistic", "extreme")),
    Param("aft_loss_distribution_scale", "float", 1.0, low=0.0, open_low=True),
    Param("deterministic_histogram", "str", "true", choices=("true", "false"), booster=False),
    Param("single_precision_histogram", "str", "false", choices=("true", "false"), booster=False),
    Param("use_dask_gpu_training", "str", "false", choices=("true", "false"), booster=False),
)}


def parse(raw: dict[str, Any]) -> dict[str, Any]:
    """The algorithm's hyperparameters from ``hyperparameters.json``'s map: every documented one
    that was given, parsed and checked; the defaults are xgboost's own and left out."""
    out: dict[str, Any] = {}
    for name, value in sorted(raw.items()):
        if name.startswith(PLATFORM_PREFIXES):
            continue
        param = TABLE.get(name)
        if param is None:
            raise HyperparameterError(f"Extraneous hyperparameter found: {name}. The hyperparameters of the "
                                      f"XGBoost algorithm are: {', '.join(sorted(TABLE))}")
        out[name] = param.parse(str(value))
    missing = [p.name for p in TABLE.values() if p.required and p.name not in out]
    if missing:
        raise HyperparameterError(f"Missing required hyperparameter: {missing[0]}")
    objective = out.get("objective", TABLE["objective"].default)
    if objective.startswith("multi:") and "num_class" not in out:
        raise HyperparameterError(f"Required hyperparameter num_class is missing: objective {objective} "
                                  f"needs it")
    if "num_class" in out and not objective.startswith("multi:"):
        raise HyperparameterError(f"Hyperparameter num_class: only for the multi:softmax and multi:softprob "
                                  f"objectives, not {objective}")
    if objective == "reg:linear":  # renamed by xgboost; the container accepts the old name
        out["objective"] = "reg:squarederror"
    return out


def booster_params(hps: dict[str, Any]) -> dict[str, Any]:
    """What goes to ``xgboost.train``'s params: the booster's own hyperparameters; ``eval_metric``
    a list; ``gpu_hist`` as xgboost ≥ 2 spells it (``tree_method=hist``, ``device=cuda``)."""
    params = {k: v for k, v in hps.items() if TABLE[k].booster}
    if params.get("tree_method") == "gpu_hist":
        params["tree_method"] = "hist"
        params["device"] = "cuda"
    params.setdefault("objective", TABLE["objective"].default)
    return params
