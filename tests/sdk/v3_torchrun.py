from sagemaker.core.helper.session_helper import Session
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, SourceCode
from sagemaker.train.distributed import Torchrun

trainer = ModelTrainer(
    training_image="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311",
    source_code=SourceCode(source_dir="dist_code", entry_script="allreduce.py"),
    compute=Compute(instance_type="ml.p4d.24xlarge", instance_count=2),
    distributed=Torchrun(),
    role="arn:aws:iam::000000000000:role/SageMakerRole",
    sagemaker_session=Session(),
)
trainer.train(logs=True)
job = trainer._latest_training_job
print("job:", job.training_job_name, job.training_job_status)
print("model:", job.model_artifacts.s3_model_artifacts)
