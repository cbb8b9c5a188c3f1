from sagemaker.core.helper.session_helper import Session
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData, SourceCode

session = Session()
train = session.upload_data("data/train.csv", key_prefix="sdk-example/train")

trainer = ModelTrainer(
    training_image="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311",
    source_code=SourceCode(source_dir="code", entry_script="train.py"),
    compute=Compute(instance_type="ml.m5.large", instance_count=1),
    role="arn:aws:iam::000000000000:role/SageMakerRole",
    hyperparameters={"epochs": 3},
    sagemaker_session=session,
)
trainer.train(input_data_config=[InputData(channel_name="training", data_source=train)], logs=True)
job = trainer._latest_training_job
print("job:", job.training_job_name, job.training_job_status)
print("model:", job.model_artifacts.s3_model_artifacts)
