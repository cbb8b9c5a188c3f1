"""The built-in XGBoost algorithm (issue 14): the sagemaker-xgboost images without a script, run on
the xgboost package inside the sandbox, through boto3 as SageMaker's tutorials do."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from typing import Any

import numpy as np
import pytest
import sdk_setup
from conftest import read_model, unique_name, wait_for_job

from trainforge.algorithms import builtin
from trainforge.algorithms.xgboost.hyperparameters import HyperparameterError, parse
from trainforge.images.catalog import resolve

xgboost = pytest.importorskip("xgboost")
readme_setup = sdk_setup.readme_setup  # the SDK tests' module-scoped fixture: the README's setup

IMAGE = "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.7-1"
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# What the SageMaker SDK and console send for this algorithm (its metric definitions).
SAGEMAKER_METRICS = [{"Name": f"{c}:rmse", "Regex": rf".*\[[0-9]+\].*#011{c}-rmse:{NUMBER}.*"}
                     for c in ("train", "validation")]
WEIGHTS = np.array([1.5, -2.0, 0.0, 3.0, 0.5])


def dataset(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(WEIGHTS)))
    return x, x @ WEIGHTS + np.sin(3 * x[:, 0]) + rng.normal(scale=0.1, size=rows)


def csv_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.6f")
    return buf.getvalue().encode()


def libsvm_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    return "".join(f"{label:.6f} " + " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(row)) + "\n"
                   for label, row in zip(y, x)).encode()


def parquet_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"label": y, **{f"f{j}": x[:, j] for j in range(x.shape[1])}})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def upload(s3: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> str:
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)
    return f"s3://{bucket}/{prefix}/"


def channel(name: str, uri: str, content_type: str | None, mode: str | None = None) -> dict[str, Any]:
    ch: dict[str, Any] = {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}
    if content_type:
        ch["ContentType"] = content_type
    if mode:
        ch["InputMode"] = mode
    return ch


def job_request(name: str, bucket: str, channels: list[dict[str, Any]], hps: dict[str, str],
                metrics: list[dict[str, str]] | None = None, image: str = IMAGE, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"TrainingImage": image, "TrainingInputMode": "File"}
    if metrics is not None:
        spec["MetricDefinitions"] = metrics
    return {"TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
            "AlgorithmSpecification": spec, "HyperParameters": hps, "InputDataConfig": channels,
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600}, **extra}


def run(sm: Any, request: dict[str, Any], status: str = "Completed") -> dict[str, Any]:
    sm.create_training_job(**request)
    described = wait_for_job(sm, request["TrainingJobName"], timeout=180)
    assert described["TrainingJobStatus"] == status, described.get("FailureReason")
    return described


def booster_of(described: dict[str, Any], s3: Any = None) -> Any:
    files = read_model(described["ModelArtifacts"]["S3ModelArtifacts"], s3)
    assert "xgboost-model" in files, sorted(files)
    booster = xgboost.Booster()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "xgboost-model")
        with open(path, "wb") as f:
            f.write(files["xgboost-model"])
        booster.load_model(path)
    return booster


def assert_beats_the_mean(booster: Any, train_y: np.ndarray) -> None:
    x, y = dataset(300, seed=99)  # held out: never uploaded
    predicted = booster.predict(xgboost.DMatrix(x))
    model_mse = float(np.mean((predicted - y) ** 2))
    mean_mse = float(np.mean((train_y.mean() - y) ** 2))
    assert model_mse < 0.2 * mean_mse, (model_mse, mean_mse)


def final_metrics(described: dict[str, Any]) -> dict[str, float]:
    return {m["MetricName"]: m["Value"] for m in described.get("FinalMetricDataList", [])}


def test_classic_csv_flow_through_boto3(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client(region="us-west-2")
    train_x, train_y = dataset(2000, seed=1)
    val_x, val_y = dataset(500, seed=2)
    train = upload(s3, bucket, "xgb/train", {"train.csv": csv_bytes(train_x, train_y)})
    val = upload(s3, bucket, "xgb/validation", {"validation.csv": csv_bytes(val_x, val_y)})
    name = unique_name("xgb-csv")
    hps = {"max_depth": "5", "eta": "0.2", "gamma": "4", "min_child_weight": "6", "subsample": "0.8",
           "objective": "reg:squarederror", "num_round": "50"}
    described = run(sm, job_request(name, bucket, [channel("train", train, "text/csv"),
                                                   channel("validation", val, "text/csv")], hps, SAGEMAKER_METRICS))
    finals = final_metrics(described)
    assert set(finals) == {"train:rmse", "validation:rmse"}
    assert 0 < finals["validation:rmse"] < float(np.std(val_y)) / 2
    booster = booster_of(described)
    assert booster.num_boosted_rounds() == 50
    assert_beats_the_mean(booster, train_y)


def test_libsvm_with_the_sdks_value_forms_gets_default_metric_definitions(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client()
    train_x, train_y = dataset(1500, seed=3)
    val_x, val_y = dataset(400, seed=4)
    half = len(train_y) // 2  # two objects in the channel: both are read
    train = upload(s3, bucket, "svm/train", {"a.libsvm": libsvm_bytes(train_x[:half], train_y[:half]),
                                              "b.libsvm": libsvm_bytes(train_x[half:], train_y[half:])})
    val = upload(s3, bucket, "svm/validation", {"v.libsvm": libsvm_bytes(val_x, val_y)})
    name = unique_name("xgb-svm")
    # JSON-encoded strings (the SDK's framework estimators) beside plain ones (the console, Estimator)
    hps = {"objective": '"reg:squarederror"', "eta": "0.2", "num_round": '"40"', "max_depth": "4.0",
           "eval_metric": "rmse,mae", "_tuning_objective_metric": "validation:rmse"}
    described = run(sm, job_request(name, bucket, [channel("train", train, None),
                                                   channel("validation", val, "text/libsvm")], hps))
    defined = {d["Name"] for d in described["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"train:rmse", "validation:rmse", "validation:auc", "validation:mlogloss"} <= defined
    assert set(final_metrics(described)) == {"train:rmse", "validation:rmse", "train:mae", "validation:mae"}
    booster = booster_of(described)
    assert booster.num_boosted_rounds() == 40
    # libsvm indices start at 1 here: column 0 is empty, as in SageMaker's container
    x, y = dataset(300, seed=99)
    predicted = booster.predict(xgboost.DMatrix(np.column_stack([np.zeros(len(y)), x])))
    assert float(np.mean((predicted - y) ** 2)) < 0.2 * float(np.mean((train_y.mean() - y) ** 2))


def test_parquet_in_pipe_mode(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client()
    train_x, train_y = dataset(1500, seed=5)
    train = upload(s3, bucket, "pq/train", {"train.parquet": parquet_bytes(train_x, train_y)})
    name = unique_name("xgb-pq")
    described = run(sm, job_request(name, bucket, [channel("train", train, "application/x-parquet", "Pipe")],
                                     {"num_round": "30", "eta": "0.3"}, SAGEMAKER_METRICS))
    assert set(final_metrics(described)) == {"train:rmse"}
    assert_beats_the_mean(booster_of(described), train_y)


def test_csv_pipe_mode_and_checkpoints_resume(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client()
    train_x, train_y = dataset(1500, seed=6)
    half = len(train_y) // 2
    train = upload(s3, bucket, "pipe/train", {"1.csv": csv_bytes(train_x[:half], train_y[:half]),
                                               "2.csv": csv_bytes(train_x[half:], train_y[half:])})
    checkpoints = {"S3Uri": f"s3://{bucket}/checkpoints/"}
    first = run(sm, job_request(unique_name("xgb-ck1"), bucket, [channel("train", train, "text/csv", "Pipe")],
                                {"num_round": "6"}, CheckpointConfig=checkpoints))
    assert booster_of(first).num_boosted_rounds() == 6
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="checkpoints/")["Contents"]}
    assert "checkpoints/xgboost-checkpoint.5" in keys, keys
    name = unique_name("xgb-ck2")
    second = run(sm, job_request(name, bucket, [channel("train", train, "text/csv", "Pipe")],
                                 {"num_round": "10"}, CheckpointConfig=checkpoints))
    assert booster_of(second).num_boosted_rounds() == 10
    lines = log_lines(server, name)
    rounds = [line.split("#011")[0] for line in lines if line.startswith("[")]
    assert rounds == ["[6]", "[7]", "[8]", "[9]"], lines
    assert any("Resuming from checkpoint xgboost-checkpoint.5" in line for line in lines), lines
    assert_beats_the_mean(booster_of(second), train_y)


def log_lines(server: Any, name: str) -> list[str]:
    logs = server.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=name + "/")["logStreams"]
    lines = []
    for stream in streams:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"],
                                     startFromHead=True)["events"]
        lines += [e["message"] for e in events]
    return lines


@pytest.mark.parametrize("hps, reason", [
    ({"num_round": "10", "eta": "2"}, "Hyperparameter eta: value 2 not in range [0, 1]"),
    ({"num_round": "10", "max_depthh": "3"}, "Extraneous hyperparameter found: max_depthh"),
    ({"eta": "0.1"}, "Missing required hyperparameter: num_round"),
    ({"num_round": "ten"}, "Hyperparameter num_round: could not parse value 'ten' as an integer"),
    ({"num_round": "5", "objective": "reg:nonsense"}, "Hyperparameter objective: value 'reg:nonsense' not in"),
])
def test_a_bad_hyperparameter_fails_the_job_with_its_reason(server: Any, s3: Any, bucket: str,
                                                            hps: dict[str, str], reason: str) -> None:
    sm = server.client()
    x, y = dataset(50, seed=7)
    train = upload(s3, bucket, "bad/train", {"t.csv": csv_bytes(x, y)})
    described = run(sm, job_request(unique_name("xgb-bad"), bucket, [channel("train", train, "text/csv")], hps),
                    status="Failed")
    assert described["FailureReason"].startswith("AlgorithmError: " + reason), described["FailureReason"]


def test_missing_train_channel_and_recordio_protobuf_are_refused(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client()
    x, y = dataset(50, seed=8)
    data = upload(s3, bucket, "rp/data", {"t.csv": csv_bytes(x, y)})
    no_train = run(sm, job_request(unique_name("xgb-nt"), bucket, [channel("validation", data, "text/csv")],
                                   {"num_round": "3"}), status="Failed")
    assert "Missing required channel: train" in no_train["FailureReason"]
    protobuf = run(sm, job_request(unique_name("xgb-rp"), bucket,
                                   [channel("train", data, "application/x-recordio-protobuf")],
                                   {"num_round": "3"}), status="Failed")
    assert "does not read RecordIO-protobuf" in protobuf["FailureReason"]


def test_other_builtin_algorithms_fail_naming_what_runs_here(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client()
    x, y = dataset(50, seed=9)
    data = upload(s3, bucket, "ll/train", {"t.csv": csv_bytes(x, y)})
    image = "174872318107.dkr.ecr.us-west-2.amazonaws.com/linear-learner:1"
    described = run(sm, job_request(unique_name("ll"), bucket, [channel("train", data, "text/csv")],
                                    {"predictor_type": "regressor"}, image=image), status="Failed")
    assert "Linear Learner" in described["FailureReason"]
    assert "XGBoost (the sagemaker-xgboost images" in described["FailureReason"]


def test_the_xgboost_images_resolve_to_the_algorithm() -> None:
    for image in (IMAGE, "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.5-1",
                  "811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1",
                  "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost@sha256:" + "b" * 64):
        runtime = resolve(image, [])
        assert runtime.error is None and runtime.command[1:] == ["-m", builtin.XGBOOST_MODULE], runtime
    kmeans = "683313688378.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
    # AWS's own image: pulled where a configured registry serves it; a failed pull says what runs here
    assert resolve(kmeans, []).kind == "pull"
    assert (builtin.unavailable_reason(kmeans) or "").startswith("The built-in algorithm k-means")


def test_hyperparameter_table_parses_value_forms() -> None:
    parsed = parse({"num_round": "100", "eta": '"0.2"', "objective": '"binary:logistic"',
                    "eval_metric": "auc,logloss", "sagemaker_region": '"us-west-2"', "max_depth": "6.0"})
    assert parsed == {"num_round": 100, "eta": 0.2, "objective": "binary:logistic",
                      "eval_metric": ["auc", "logloss"], "max_depth": 6}
    metrics = "error@0.7,ndcg@5,map@3-,ndcg-,pre@2,aucpr"
    assert parse({"num_round": "1", "eval_metric": metrics})["eval_metric"] == metrics.split(",")
    for bad, message in [({"num_round": "0"}, "value 0 not in range [1, inf)"),
                         ({"num_round": "5", "eval_metric": "error@high"}, "eval_metric"),
                         ({"num_round": "5", "eval_metric": "rmse@3"}, "eval_metric"),
                         ({"num_round": "5", "subsample": "0"}, "value 0 not in range (0, 1]"),
                         ({"num_round": "5", "objective": "multi:softmax"}, "num_class is missing"),
                         ({"num_round": "5", "eval_metric": "rmse,bogus"}, "eval_metric")]:
        with pytest.raises(HyperparameterError, match=re.escape(message)):
            parse(bad)


def test_metric_definitions_match_the_log_lines_as_shown() -> None:
    definitions = {d["Name"]: d["Regex"] for d in builtin.xgboost_metric_definitions()}
    assert len(definitions) <= 40  # the API's limit
    line = "[3]#011train-rmse:0.31#011validation-rmse:0.35#011validation-error:1.5e-3"
    assert re.match(definitions["validation:rmse"], line).group(1) == "0.35"  # type: ignore[union-attr]
    assert re.match(definitions["validation:error"], line).group(1) == "1.5e-3"  # type: ignore[union-attr]
    assert re.match(definitions["train:merror"], line) is None
    assert json.dumps(definitions)  # plain strings


def sdk_data(tmp_path: Any) -> str:
    data = tmp_path / "xgb-data"
    data.mkdir()
    (data / "train.csv").write_bytes(csv_bytes(*dataset(1500, seed=21)))
    (data / "validation.csv").write_bytes(csv_bytes(*dataset(400, seed=22)))
    return str(data)


def test_sdk_v2_estimator_with_the_xgboost_image(readme_setup: Any, tmp_path: Any) -> None:
    """Set up as the README says (``trainforge env --sagemaker-config``), through the embedded S3."""
    from test_sdk import _line

    output = readme_setup.run("sdk2", "v2_xgboost.py", sdk_data(tmp_path))
    job = _line(output, "job:")
    assert "#011validation-rmse:" in output or "\tvalidation-rmse:" in output  # fit(logs=True) showed the rounds
    assert set(_line(output, "metrics:").split()) == {"train:rmse", "validation:rmse"}
    assert 0 < float(_line(output, "last validation:rmse:")) < 2.0
    described = readme_setup.client("sagemaker").describe_training_job(TrainingJobName=job)
    assert described["HyperParameters"]["num_round"] == "25"
    assert booster_of(described, readme_setup.client("s3")).num_boosted_rounds() == 25


def test_sdk_v3_model_trainer_with_the_xgboost_image(readme_setup: Any, tmp_path: Any) -> None:
    from test_sdk import _line

    output = readme_setup.run("sdk3", "v3_xgboost.py", sdk_data(tmp_path))
    job, status = _line(output, "job:").split()
    assert status == "Completed"
    described = readme_setup.client("sagemaker").describe_training_job(TrainingJobName=job)
    assert booster_of(described, readme_setup.client("s3")).num_boosted_rounds() == 15


def test_two_instances_train_one_model_on_their_shards(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client()
    train_x, train_y = dataset(2000, seed=31)
    half = len(train_y) // 2
    train = upload(s3, bucket, "dist/train", {"a.csv": csv_bytes(train_x[:half], train_y[:half]),
                                               "b.csv": csv_bytes(train_x[half:], train_y[half:])})
    ch = channel("train", train, "text/csv")
    ch["DataSource"]["S3DataSource"]["S3DataDistributionType"] = "ShardedByS3Key"
    name = unique_name("xgb-dist")
    req = job_request(name, bucket, [ch], {"num_round": "20", "eta": "0.3"}, SAGEMAKER_METRICS)
    req["ResourceConfig"]["InstanceCount"] = 2
    described = run(sm, req)
    booster = booster_of(described)
    assert booster.num_boosted_rounds() == 20
    assert_beats_the_mean(booster, train_y)
    # each host trained on its own shard, the two joined in XGBoost's collective: ranks 0 and 1
    # (without it each would be rank 0 of its own, and both would print every round)
    lines = log_lines(server, name)
    assert len([line for line in lines if line.startswith("[19]")]) == 1, lines
