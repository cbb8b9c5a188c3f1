import sys

import sagemaker
from sagemaker.pytorch import PyTorch

estimator = PyTorch(
    entry_point="allreduce.py",
    source_dir="dist_code",
    role="arn:aws:iam::000000000000:role/SageMakerRole",
    framework_version="2.5.1",
    py_version="py311",
    instance_count=2,
    instance_type="ml.p4d.24xlarge",
    distribution={"torch_distributed": {"enabled": True}},
    sagemaker_session=sagemaker.Session(),
)
estimator.fit(logs=True, wait=True)
print("model:", estimator.model_data)
print("job:", estimator.latest_training_job.name)
sys.stdout.flush()
