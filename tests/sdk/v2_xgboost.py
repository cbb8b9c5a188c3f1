import sys

import sagemaker
from sagemaker import image_uris
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput

data = sys.argv[1]  # a directory holding train.csv and validation.csv (label first, no header)
session = sagemaker.Session()
train = session.upload_data(f"{data}/train.csv", key_prefix="sdk-xgboost/train")
validation = session.upload_data(f"{data}/validation.csv", key_prefix="sdk-xgboost/validation")

estimator = Estimator(
    image_uri=image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1"),
    role="arn:aws:iam::000000000000:role/SageMakerRole",
    instance_count=1,
    instance_type="ml.m5.large",
    sagemaker_session=session,
)
estimator.set_hyperparameters(objective="reg:squarederror", num_round=25, eta=0.2, max_depth=4)
estimator.fit({"train": TrainingInput(train, content_type="text/csv"),
               "validation": TrainingInput(validation, content_type="text/csv")}, logs=True)
metrics = estimator.training_job_analytics.dataframe()
print("job:", estimator.latest_training_job.name)
print("metrics:", " ".join(sorted(set(metrics["metric_name"]))))
print("last validation:rmse:", metrics[metrics["metric_name"] == "validation:rmse"]["value"].iloc[-1])
print("model:", estimator.model_data)
