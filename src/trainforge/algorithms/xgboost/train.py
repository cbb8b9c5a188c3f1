"""The XGBoost algorithm's training run: ``python -m trainforge.algorithms.xgboost train``.

1. With ``sagemaker_program`` (hyperparameter, or env ``SAGEMAKER_PROGRAM``) the image is in script
   mode, as SageMaker's XGBoost container is: :mod:`trainforge.images.script_mode` runs the script.
2. Otherwise the algorithm: hyperparameters parsed and checked (``hyperparameters.py``), channels
   ``train`` (required) and ``validation`` (optional) read (``data.py``), ``xgboost.train`` with
   both as evaluation sets. Each round prints one line in the container's format,
   ``[3]\\ttrain-rmse:0.31000\\tvalidation-rmse:0.35000`` (SageMaker's logs show the tabs as
   ``#011``; its metric regexes are written for that). Early stopping watches the last metric of
   the validation channel.
3. With CheckpointConfig (``checkpointconfig.json``), the booster is saved after every round as
   ``xgboost-checkpoint.<round>`` in its LocalPath (``callbacks.py``; the last few kept); a run
   that finds checkpoints there resumes from the latest one and trains the rounds still missing.
4. The model is saved as ``/opt/ml/model/xgboost-model`` (``xgboost.Booster().load_model``).
5. Several instances (``resourceconfig.json``) train one model through XGBoost's collective
   (``collective.py``); the first host saves it.

An error of the input (a hyperparameter, a channel) is written to ``/opt/ml/output/failure`` and
the run exits 1; SIGTERM ends training after the current round (the model is saved when
``save_model_on_termination`` is true).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

from trainforge.algorithms.builtin import is_script_mode
from trainforge.algorithms.xgboost import data as channels
from trainforge.algorithms.xgboost.hyperparameters import HyperparameterError, booster_params, parse

MODEL_NAME = "xgboost-model"


def base_dir() -> str:
    return os.environ.get("SAGEMAKER_BASE_DIR") or "/opt/ml"


def _config(base: str, name: str, default: Any) -> Any:
    try:
        with open(os.path.join(base, "input", "config", name), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def main(argv: list[str]) -> int:
    base = base_dir()
    raw = _config(base, "hyperparameters.json", {})
    if is_script_mode(raw, dict(os.environ)):  # xgboost is not imported on this path
        from trainforge.images import script_mode

        return script_mode.main(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        train(base, raw, stop)
    except (HyperparameterError, channels.DataError) as exc:
        return _fail(base, str(exc))
    except Exception as exc:  # noqa: BLE001 - xgboost's own errors (an objective and its labels...)
        message = str(exc).strip().splitlines()
        return _fail(base, f"XGBoost training failed: {type(exc).__name__}: "
                           f"{message[0] if message else ''}".rstrip(": "))
    return 0


def _fail(base: str, message: str) -> int:
    print(message, file=sys.stderr, flush=True)
    out = os.path.join(base, "output")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "failure"), "w", encoding="utf-8") as f:
        f.write(message)
    return 1


def train(base: str, raw: dict[str, Any], stop: threading.Event) -> None:
    hps = parse(raw)
    data_config = _config(base, "inputdataconfig.json", {})
    if "train" not in data_config:
        raise channels.DataError("Missing required channel: train (the XGBoost algorithm reads the channels "
                                 f"train and validation; this job has {', '.join(sorted(data_config)) or 'none'})")
    train_ch = channels.channel(base, "train", data_config["train"])
    val_ch = channels.channel(base, "validation", data_config["validation"]) if "validation" in data_config else None
    if hps.get("early_stopping_rounds") and val_ch is None:
        raise HyperparameterError("Hyperparameter early_stopping_rounds: needs a validation channel")
    resource = _config(base, "resourceconfig.json", {})
    hosts = resource.get("hosts") or ["algo-1"]
    current = resource.get("current_host") or hosts[0]
    if len(hosts) > 1:
        from trainforge.algorithms.xgboost.collective import communicator

        with communicator(hosts, current):
            _train(base, hps, train_ch, val_ch, stop, save=current == hosts[0])
    else:
        _train(base, hps, train_ch, val_ch, stop, save=True)


def _train(base: str, hps: dict[str, Any], train_ch: channels.Channel, val_ch: channels.Channel | None,
           stop: threading.Event, save: bool) -> None:
    import xgboost

    from trainforge.algorithms.xgboost.callbacks import Checkpointer, RoundLog, latest_checkpoint

    weights = bool(hps.get("csv_weights"))
    dtrain = channels.load(train_ch, weights)
    evals = [(dtrain, "train")]
    if val_ch is not None:
        evals.append((channels.load(val_ch, weights), "validation"))
    checkpoint_config = _config(base, "checkpointconfig.json", None)
    checkpoints = (checkpoint_config.get("LocalPath") or os.path.join(base, "checkpoints")
                   if isinstance(checkpoint_config, dict) else None)
    resume = latest_checkpoint(checkpoints) if checkpoints else None
    num_round = int(hps["num_round"])
    booster = _load(resume) if resume else None
    done = booster.num_boosted_rounds() if booster is not None else 0
    if resume:
        print(f"Resuming from checkpoint {os.path.basename(resume)}: {done} of {num_round} rounds done",
              flush=True)
    early = hps.get("early_stopping_rounds")
    log = RoundLog(stop, done, early)
    callbacks: list[Any] = [log]
    if checkpoints and save:
        callbacks.append(Checkpointer(checkpoints, done))
    if done < num_round:
        booster = xgboost.train(booster_params(hps), dtrain, num_boost_round=num_round - done, evals=evals,
                                early_stopping_rounds=early, verbose_eval=False,
                                callbacks=callbacks, xgb_model=booster)
        log.report_early_stop(booster, num_round)
    if booster is None:
        return
    if save and (not stop.is_set() or hps.get("save_model_on_termination") == "true"):
        model_dir = os.path.join(base, "model")
        os.makedirs(model_dir, exist_ok=True)
        partial = os.path.join(model_dir, f".{MODEL_NAME}.partial.ubj")  # the extension names the format
        booster.save_model(partial)
        os.replace(partial, os.path.join(model_dir, MODEL_NAME))


def _load(path: str) -> Any:
    """A saved booster (from its bytes: the format is told by them, not by a file extension)."""
    import xgboost

    booster = xgboost.Booster()
    with open(path, "rb") as f:
        booster.load_model(bytearray(f.read()))
    return booster
