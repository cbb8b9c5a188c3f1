import sys

from sagemaker.core.helper.session_helper import Session
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData

data = sys.argv[1]  # a directory holding train.csv (label first, no header)
session = Session()
train = session.upload_data(f"{data}/train.csv", key_prefix="sdk-xgboost/train")

trainer = ModelTrainer(
    training_image="683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
    compute=Compute(instance_type="ml.m5.large", instance_count=1),
    role="arn:aws:iam::000000000000:role/SageMakerRole",
    hyperparameters={"objective": "reg:squarederror", "num_round": 15, "eta": 0.3},
    sagemaker_session=session,
)
trainer.train(input_data_config=[InputData(channel_name="train", data_source=train, content_type="text/csv")],
              logs=True)
job = trainer._latest_training_job
print("job:", job.training_job_name, job.training_job_status)
print("model:", job.model_artifacts.s3_model_artifacts)
