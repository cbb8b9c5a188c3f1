import sagemaker
from sagemaker.pytorch import PyTorch

session = sagemaker.Session()
train = session.upload_data("data/train.csv", key_prefix="sdk-example/train")

estimator = PyTorch(
    entry_point="train.py",
    source_dir="code",
    role="arn:aws:iam::000000000000:role/SageMakerRole",
    framework_version="2.5",
    py_version="py311",
    instance_count=1,
    instance_type="ml.m5.large",
    hyperparameters={"epochs": 3},
    sagemaker_session=session,
)
estimator.fit({"training": train}, logs=True)
print("model:", estimator.model_data)
print("job:", estimator.latest_training_job.name)
