"""Algorithm resources (issue 14): CreateAlgorithm / DescribeAlgorithm / ListAlgorithms /
DeleteAlgorithm, and CreateTrainingJob with AlgorithmName held to the algorithm's rules."""

from __future__ import annotations

import copy
import sqlite3
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import read_model, unique_name, wait_for_job, wait_until
from test_builtin_xgboost import IMAGE, SAGEMAKER_METRICS, channel, csv_bytes, dataset, job_request, upload


def specification(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "TrainingImage": IMAGE,
        "SupportedHyperParameters": [
            {"Name": "num_round", "Type": "Integer", "IsRequired": True, "DefaultValue": "7",
             "Range": {"IntegerParameterRangeSpecification": {"MinValue": "1", "MaxValue": "1000"}}},
            {"Name": "eta", "Type": "Continuous", "DefaultValue": "0.3",
             "Range": {"ContinuousParameterRangeSpecification": {"MinValue": "0", "MaxValue": "0.5"}}},
            {"Name": "objective", "Type": "Categorical", "DefaultValue": "reg:squarederror",
             "Range": {"CategoricalParameterRangeSpecification": {"Values": ["reg:squarederror", "reg:absoluteerror"]}}},
            {"Name": "eval_metric", "Type": "FreeText"},
        ],
        "SupportedTrainingInstanceTypes": ["ml.m5.xlarge", "ml.m5.2xlarge"],
        "SupportsDistributedTraining": False,
        "MetricDefinitions": SAGEMAKER_METRICS,
        "TrainingChannels": [
            {"Name": "train", "IsRequired": True, "SupportedContentTypes": ["text/csv"],
             "SupportedInputModes": ["File", "Pipe"]},
            {"Name": "validation", "SupportedContentTypes": ["text/csv"], "SupportedInputModes": ["File"]},
        ],
    }
    spec.update(overrides)
    return spec


def create(sm: Any, **overrides: Any) -> str:
    name = unique_name("algo")
    sm.create_algorithm(AlgorithmName=name, AlgorithmDescription="xgboost with house rules",
                        TrainingSpecification=specification(**overrides))
    return name


def refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    assert exc.value.response["Error"]["Code"] == "ValidationException", exc.value.response
    return str(exc.value.response["Error"]["Message"])


def test_create_describe_list_delete(server: Any) -> None:
    sm = server.client()
    name = create(sm)
    described = sm.describe_algorithm(AlgorithmName=name)
    assert described["AlgorithmName"] == name and described["AlgorithmStatus"] == "Completed"
    assert described["AlgorithmArn"] == f"arn:aws:sagemaker:us-east-1:000000000000:algorithm/{name}"
    assert described["TrainingSpecification"]["TrainingChannels"][0]["Name"] == "train"
    assert sm.describe_algorithm(AlgorithmName=described["AlgorithmArn"])["AlgorithmName"] == name
    with pytest.raises(ClientError) as exc:
        sm.create_algorithm(AlgorithmName=name, TrainingSpecification=specification())
    assert exc.value.response["Error"]["Code"] == "ResourceInUse"
    others = [create(sm) for _ in range(2)]
    prefix = name.rsplit("-", 2)[0]
    listed = sm.list_algorithms(NameContains=prefix, SortBy="Name", MaxResults=2)
    assert [a["AlgorithmName"] for a in listed["AlgorithmSummaryList"]] == sorted([name, *others])[:2]
    rest = sm.list_algorithms(NameContains=prefix, SortBy="Name", MaxResults=2, NextToken=listed["NextToken"])
    assert [a["AlgorithmName"] for a in rest["AlgorithmSummaryList"]] == sorted([name, *others])[2:]
    sm.delete_algorithm(AlgorithmName=name)
    assert "does not exist" in refused(sm.describe_algorithm, AlgorithmName=name)
    assert name not in [a["AlgorithmName"] for a in sm.list_algorithms(NameContains=prefix)["AlgorithmSummaryList"]]


@pytest.mark.parametrize("change, message", [
    (lambda s: s["SupportedHyperParameters"][0]["Range"]["IntegerParameterRangeSpecification"].update(MinValue="9",
                                                                                                      MaxValue="3"),
     "MinValue 9 is greater than MaxValue 3"),
    (lambda s: s["SupportedHyperParameters"][1].update(DefaultValue="0.9"), "DefaultValue 0.9 is outside its range"),
    (lambda s: s["SupportedHyperParameters"][1].update(Range={"IntegerParameterRangeSpecification": {
        "MinValue": "0", "MaxValue": "1"}}), "needs a Range with ContinuousParameterRangeSpecification"),
    (lambda s: s["TrainingChannels"].append(dict(s["TrainingChannels"][0])), "the name train appears more than once"),
])
def test_a_specification_that_contradicts_itself_is_refused(server: Any, change: Any, message: str) -> None:
    spec = specification()
    change(spec)
    assert message in refused(server.client().create_algorithm, AlgorithmName=unique_name("algo"),
                              TrainingSpecification=spec)


def algorithm_job(name: str, bucket: str, algorithm: str, hps: dict[str, str], **extra: Any) -> dict[str, Any]:
    req = job_request(name, bucket, [channel("train", f"s3://{bucket}/algo/train/", "text/csv")], hps, **extra)
    req["AlgorithmSpecification"] = {"AlgorithmName": algorithm, "TrainingInputMode": "File"}
    return req


@pytest.mark.parametrize("change, message", [
    (lambda r: r["HyperParameters"].update(eta="0.9"), "Hyperparameter eta: value 0.9 is outside its range [0, 0.5]"),
    (lambda r: r["HyperParameters"].update(max_depth="3"), "Hyperparameter max_depth is not supported by algorithm"),
    (lambda r: r["HyperParameters"].update(num_round="2.5"), "Hyperparameter num_round: value '2.5' is not an Integer"),
    (lambda r: r["HyperParameters"].update(objective="binary:logistic"), "is not one of its Categorical values"),
    (lambda r: r["InputDataConfig"][0].update(ChannelName="training"), "Channel train is required by algorithm"),
    (lambda r: r["InputDataConfig"].append({**copy.deepcopy(r["InputDataConfig"][0]), "ChannelName": "extra"}),
     "Channel extra is not supported by algorithm"),
    (lambda r: r["InputDataConfig"][0].update(ContentType="text/libsvm"),
     "Content type text/libsvm of channel train is not supported"),
    (lambda r: r["InputDataConfig"][0].update(InputMode="FastFile"),
     "Input mode FastFile of channel train is not supported"),
    (lambda r: r["ResourceConfig"].update(InstanceType="ml.c5.xlarge"),
     "Instance type ml.c5.xlarge is not supported by algorithm"),
    (lambda r: r["ResourceConfig"].update(InstanceCount=2), "does not support distributed training"),
])
def test_a_job_breaking_an_algorithm_rule_is_refused(server: Any, bucket: str, change: Any, message: str) -> None:
    sm = server.client()
    algorithm = create(sm)
    req = algorithm_job(unique_name("algo-job"), bucket, algorithm, {"eta": "0.2"})
    change(req)
    assert message in refused(sm.create_training_job, **req)


def test_unknown_algorithm_is_refused(server: Any, bucket: str) -> None:
    sm = server.client()
    req = algorithm_job(unique_name("algo-job"), bucket, "no-such-algorithm", {})
    assert "algorithm/no-such-algorithm does not exist" in refused(sm.create_training_job, **req)


def test_a_job_on_an_algorithm_runs_its_image_with_its_defaults_and_metrics(server: Any, s3: Any,
                                                                             bucket: str) -> None:
    sm = server.client()
    algorithm = create(sm)
    arn = sm.describe_algorithm(AlgorithmName=algorithm)["AlgorithmArn"]
    x, y = dataset(800, seed=11)
    upload(s3, bucket, "algo/train", {"t.csv": csv_bytes(x, y)})
    name = unique_name("algo-job")
    sm.create_training_job(**algorithm_job(name, bucket, arn, {"eta": "0.25"}))  # by ARN; num_round defaulted
    described = wait_for_job(sm, name, timeout=180)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["AlgorithmSpecification"]["AlgorithmName"] == arn
    assert "TrainingImage" not in described["AlgorithmSpecification"]
    assert described["AlgorithmSpecification"]["MetricDefinitions"] == SAGEMAKER_METRICS
    assert described["HyperParameters"] == {"eta": "0.25", "num_round": "7", "objective": "reg:squarederror"}
    assert {m["MetricName"] for m in described["FinalMetricDataList"]} == {"train:rmse"}
    import xgboost

    files = read_model(described["ModelArtifacts"]["S3ModelArtifacts"])
    booster = xgboost.Booster()
    booster.load_model(bytearray(files["xgboost-model"]))
    assert booster.num_boosted_rounds() == 7


def test_tags_on_an_algorithm_arn(server: Any) -> None:
    sm = server.client()
    name = unique_name("algo")
    arn = sm.create_algorithm(AlgorithmName=name, TrainingSpecification=specification(),
                              Tags=[{"Key": "team", "Value": "ml"}])["AlgorithmArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "research"}, {"Key": "env", "Value": "dev"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "dev"},
                                                     {"Key": "team", "Value": "research"}]
    sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "dev"}]
    assert "aws:" in refused(sm.add_tags, ResourceArn=arn, Tags=[{"Key": "aws:owner", "Value": "x"}])
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": f"k{i:02d}", "Value": ""} for i in range(49)])
    with pytest.raises(ClientError) as exc:
        sm.add_tags(ResourceArn=arn, Tags=[{"Key": "one-too-many", "Value": "x"}])
    assert exc.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    sm.delete_algorithm(AlgorithmName=name)
    assert "not found" in refused(sm.list_tags, ResourceArn=arn)
    other_region = arn.replace("us-east-1", "eu-west-1")
    assert "not found" in refused(sm.add_tags, ResourceArn=other_region, Tags=[{"Key": "a", "Value": "b"}])


def validation(bucket: str, **profiles: dict[str, str]) -> dict[str, Any]:
    """A ValidationSpecification with one profile per keyword (its hyperparameters)."""
    def definition(hps: dict[str, str]) -> dict[str, Any]:
        return {"TrainingInputMode": "File", "HyperParameters": hps,
                "InputDataConfig": [channel("train", f"s3://{bucket}/algo-val/train/", "text/csv")],
                "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
                "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600}}
    return {"ValidationRole": "arn:aws:iam::000000000000:role/SageMakerRole",
            "ValidationProfiles": [{"ProfileName": name, "TrainingJobDefinition": definition(hps)}
                                   for name, hps in profiles.items()]}


def algorithm_status(sm: Any, name: str) -> dict[str, Any]:
    """DescribeAlgorithm once the algorithm's validation has ended (polled, bounded)."""
    return dict(wait_until(lambda: sm.describe_algorithm(AlgorithmName=name), timeout=240,
                           message=f"{name}: validation ended",
                           until=lambda d: d["AlgorithmStatus"] in ("Completed", "Failed")))


def test_validation_profiles_run_as_training_jobs(server: Any, s3: Any, bucket: str) -> None:
    sm = server.client()
    x, y = dataset(400, seed=51)
    upload(s3, bucket, "algo-val/train", {"t.csv": csv_bytes(x, y)})
    good = unique_name("algo")
    sm.create_algorithm(AlgorithmName=good, TrainingSpecification=specification(),
                        ValidationSpecification=validation(bucket, quick={"num_round": "3"}))  # at most 1
    first = sm.describe_algorithm(AlgorithmName=good)
    assert first["AlgorithmStatus"] in ("InProgress", "Completed")
    assert [v["Name"] for v in first["AlgorithmStatusDetails"]["ValidationStatuses"]] == ["quick"]
    done = algorithm_status(sm, good)
    assert done["AlgorithmStatus"] == "Completed", done["AlgorithmStatusDetails"]
    assert done["AlgorithmStatusDetails"]["ValidationStatuses"] == [{"Name": "quick", "Status": "Completed"}]
    assert done["ValidationSpecification"]["ValidationProfiles"][0]["ProfileName"] == "quick"
    jobs = sm.list_training_jobs(NameContains=f"{good[:40]}-val")["TrainingJobSummaries"]
    assert [j["TrainingJobStatus"] for j in jobs] == ["Completed"]
    assert sm.describe_training_job(TrainingJobName=jobs[0]["TrainingJobName"])["HyperParameters"]["num_round"] == "3"
    listed = sm.list_algorithms(NameContains=good)["AlgorithmSummaryList"]
    assert [a["AlgorithmStatus"] for a in listed] == ["Completed"]
    # A profile whose job fails (eval_metric is FreeText to the algorithm, unknown to XGBoost).
    bad = unique_name("algo")
    sm.create_algorithm(AlgorithmName=bad, TrainingSpecification=specification(),
                        ValidationSpecification=validation(bucket, broken={"eval_metric": "bogus"}))
    failed = algorithm_status(sm, bad)
    assert failed["AlgorithmStatus"] == "Failed"
    [status] = failed["AlgorithmStatusDetails"]["ValidationStatuses"]
    assert status["Name"] == "broken" and status["Status"] == "Failed"
    assert "eval_metric" in status["FailureReason"], status


def test_a_validation_profile_breaking_a_rule_is_refused_with_nothing_left(server: Any, bucket: str) -> None:
    sm = server.client()
    name = unique_name("algo")
    message = refused(sm.create_algorithm, AlgorithmName=name, TrainingSpecification=specification(),
                      ValidationSpecification=validation(bucket, hot={"eta": "0.9"}))
    assert "Validation profile hot: Hyperparameter eta: value 0.9 is outside its range" in message
    assert "does not exist" in refused(sm.describe_algorithm, AlgorithmName=name)
    assert sm.list_training_jobs(NameContains=f"{name[:40]}-val")["TrainingJobSummaries"] == []
    spec = validation(bucket, scored={})
    spec["ValidationProfiles"][0]["TransformJobDefinition"] = {
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/x"}}},
        "TransformOutput": {"S3OutputPath": f"s3://{bucket}/out"},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}}
    assert "TransformJobDefinition is not supported by trainforge" in refused(
        sm.create_algorithm, AlgorithmName=name, TrainingSpecification=specification(), ValidationSpecification=spec)
    assert "CertifyForMarketplace is not supported" in refused(
        sm.create_algorithm, AlgorithmName=name, TrainingSpecification=specification(), CertifyForMarketplace=True)
    assert "does not exist" in refused(sm.describe_algorithm, AlgorithmName=name)  # nothing was stored
    sm.create_algorithm(AlgorithmName=name, TrainingSpecification=specification(), CertifyForMarketplace=False)
    assert sm.describe_algorithm(AlgorithmName=name)["AlgorithmStatus"] == "Completed"


SLEEPER = "test/sleeper:1"  # a validation job that runs until it is stopped


@pytest.fixture
def sleeper_server(server_factory: Any, s3: Any, bucket: str) -> Any:
    upload(s3, bucket, "algo-val/train", {"t.csv": b"1,2\n"})
    return server_factory({"images": [{"image": "test/sleeper:*", "kind": "command",
                                       "entrypoint": ["/bin/sh", "-c", "sleep 600"]}]})


def validation_jobs(sm: Any, algorithm: str) -> list[dict[str, Any]]:
    return list(sm.list_training_jobs(NameContains=f"{algorithm[:40]}-val")["TrainingJobSummaries"])


def test_delete_algorithm_stops_its_running_validation_job(sleeper_server: Any, bucket: str) -> None:
    sm = sleeper_server.client()
    name = unique_name("algo")
    sm.create_algorithm(AlgorithmName=name, TrainingSpecification=specification(TrainingImage=SLEEPER),
                        ValidationSpecification=validation(bucket, slow={}))
    [job] = validation_jobs(sm, name)
    wait_for_job(sm, job["TrainingJobName"], "Training", secondary=True)
    sm.delete_algorithm(AlgorithmName=name)
    assert "does not exist" in refused(sm.describe_algorithm, AlgorithmName=name)
    assert wait_for_job(sm, job["TrainingJobName"])["TrainingJobStatus"] == "Stopped"


def test_a_create_failing_after_its_validation_job_started_leaves_nothing(sleeper_server: Any, bucket: str) -> None:
    sm = sleeper_server.client()
    name = unique_name("algo")
    # The store refuses the write that records the algorithm's validation jobs, made once they were created.
    db = sqlite3.connect(sleeper_server.data_dir / "trainforge.db")
    db.execute(f"CREATE TRIGGER refuse_{name.replace('-', '_')} BEFORE UPDATE ON algorithms "
               f"WHEN NEW.name = '{name}' BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    try:
        with pytest.raises(ClientError) as exc:
            sm.create_algorithm(AlgorithmName=name, TrainingSpecification=specification(TrainingImage=SLEEPER),
                                ValidationSpecification=validation(bucket, slow={}))
    finally:
        db.execute(f"DROP TRIGGER refuse_{name.replace('-', '_')}")
        db.close()
    assert exc.value.response["Error"]["Code"] == "InternalFailure", exc.value.response
    assert "does not exist" in refused(sm.describe_algorithm, AlgorithmName=name)
    assert validation_jobs(sm, name) == []  # its job was stopped and deleted
    sm.create_algorithm(AlgorithmName=name, TrainingSpecification=specification(TrainingImage=SLEEPER))
    assert sm.describe_algorithm(AlgorithmName=name)["AlgorithmStatus"] == "Completed"
