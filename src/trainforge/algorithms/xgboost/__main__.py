"""``python -m trainforge.algorithms.xgboost train``: the entrypoint of the sagemaker-xgboost images."""

import sys

from trainforge.algorithms.xgboost.train import main

sys.exit(main(sys.argv[1:]))
