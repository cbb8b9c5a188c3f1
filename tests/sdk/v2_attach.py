import sys

from sagemaker.estimator import Estimator

job_name = sys.argv[1]
estimator = Estimator.attach(job_name)
print("attached:", estimator.latest_training_job.name, estimator.instance_type, estimator.output_kms_key)
estimator.logs()
