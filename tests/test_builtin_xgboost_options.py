"""The built-in XGBoost algorithm's own options (issue 14): early_stopping_rounds, csv_weights,
save_model_on_termination (with StopTrainingJob), through boto3 against a real server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import read_model, unique_name, wait_for_job, wait_until
from test_builtin_xgboost import booster_of, channel, csv_bytes, dataset, job_request, log_lines, run, upload

xgboost = pytest.importorskip("xgboost")


def test_early_stopping_stops_and_says_so(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client()
    x, y = dataset(600, seed=21)
    rng = np.random.default_rng(22)
    noise = rng.normal(size=400)  # a validation set the model cannot learn: it stops improving at once
    train = upload(s3, bucket, "early/train", {"t.csv": csv_bytes(x, y)})
    val = upload(s3, bucket, "early/validation", {"v.csv": csv_bytes(rng.normal(size=(400, 5)), noise)})
    name = unique_name("xgb-early")
    described = run(sm, job_request(name, bucket, [channel("train", train, "text/csv"),
                                                   channel("validation", val, "text/csv")],
                                    {"num_round": "500", "early_stopping_rounds": "3", "eta": "0.5"}))
    rounds = booster_of(described).num_boosted_rounds()
    assert rounds < 500, rounds
    lines = log_lines(server, name)
    assert "Will train until validation-rmse hasn't improved in 3 rounds." in lines, lines
    stop_at = lines.index("Stopping. Best iteration:")
    best = lines[stop_at + 1]
    assert best.startswith("[") and "#011validation-rmse:" in best, lines[stop_at:]
    assert int(best[1:best.index("]")]) == rounds - 1 - 3  # the best round, 3 rounds before the last
    assert f"[{rounds}]" not in [line.split("#011")[0] for line in lines]


def test_csv_weights_take_the_second_column(server: Any, s3: Any, bucket: str) -> None:
    """Two groups with opposite labels at the same point; the weights decide where the model lands."""
    sm = server.client()
    rows = 200
    x = np.zeros((rows, 1))
    labels = np.where(np.arange(rows) % 2 == 0, 10.0, -10.0)
    weights = np.where(labels > 0, 9.0, 1.0)  # the +10 rows weigh 9 times more: the weighted mean is 8
    body = "".join(f"{label},{w},{v}\n" for label, w, v in zip(labels, weights, x[:, 0])).encode()
    train = upload(s3, bucket, "weights/train", {"t.csv": body})
    hps = {"num_round": "50", "eta": "0.5", "base_score": "0"}
    weighted = run(sm, job_request(unique_name("xgb-w"), bucket, [channel("train", train, "text/csv")],
                                   {**hps, "csv_weights": "1"}))
    predicted = float(booster_of(weighted).predict(xgboost.DMatrix(np.zeros((1, 1))))[0])
    assert abs(predicted - 8.0) < 0.1, predicted
    # Without the flag the weight column is a feature; every row counts once: the mean is 0.
    unweighted = run(sm, job_request(unique_name("xgb-nw"), bucket, [channel("train", train, "text/csv")], hps))
    booster = booster_of(unweighted)
    assert booster.num_features() == 2
    both = booster.predict(xgboost.DMatrix(np.array([[9.0, 0.0], [1.0, 0.0]])))
    assert abs(float(both[0]) - 10.0) < 0.1 and abs(float(both[1]) + 10.0) < 0.1, both


@pytest.mark.parametrize("save", ["true", "false"])
def test_save_model_on_termination_with_a_stop(server: Any, s3: Any, bucket: str, save: str) -> None:
    sm = server.client()
    x, y = dataset(3000, seed=31)
    train = upload(s3, bucket, f"terminate-{save}/train", {"t.csv": csv_bytes(x, y)})
    name = unique_name("xgb-term")
    sm.create_training_job(**job_request(name, bucket, [channel("train", train, "text/csv")],
                                         {"num_round": "1000000", "save_model_on_termination": save}))
    wait_until(lambda: [line for line in log_lines(server, name) if line.startswith("[3]")], timeout=180,
               message=f"{name}: round 3 in the log")
    sm.stop_training_job(TrainingJobName=name)
    described = wait_for_job(sm, name, timeout=120)
    assert described["TrainingJobStatus"] == "Stopped", described.get("FailureReason")
    if save == "true":
        rounds = booster_of(described).num_boosted_rounds()
        assert 4 <= rounds < 1000000, rounds
    else:  # the stopped job's output holds no model (an empty model.tar.gz, or none at all)
        uri = described["ModelArtifacts"]["S3ModelArtifacts"]
        bucket_name, key = uri[len("s3://"):].split("/", 1)
        if s3.list_objects_v2(Bucket=bucket_name, Prefix=key).get("KeyCount"):
            assert "xgboost-model" not in read_model(uri)
