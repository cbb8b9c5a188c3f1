"""The training process's environment and command line (CONTRACT.md §2, §3).

Pure functions of the spec and :class:`~.spec.Paths`. The ``SM_*`` values are computed exactly as
the ``sagemaker-training`` toolkit computes them inside a framework image (``environment.py``,
``mapping.py`` there): hyperparameters JSON-decoded where they decode, ``sagemaker_*`` keys kept
out of ``SM_HPS`` / ``SM_HP_*`` / ``SM_USER_ARGS``, strings raw, other values compact JSON with
sorted keys.
"""

from __future__ import annotations

import json
import os
from typing import Any

import trainforge
from trainforge.agent import layout
from trainforge.agent.endpoints import CREDENTIALS_PATH
from trainforge.agent.spec import Paths, hosts, network_isolated
from trainforge.images.kinds import PULL
from trainforge.sandbox import gpu_env
from trainforge.sandbox.relay import CREDENTIALS_ADDRESS
from trainforge.sandbox.relay import CREDENTIALS_PATH as SANDBOX_CREDENTIALS_PATH

MASTER_PORT = "7777"
# sagemaker_training.params.SAGEMAKER_HYPERPARAMETERS: framework keys, never user arguments.
SAGEMAKER_HYPERPARAMETERS = (
    "sagemaker_program", "sagemaker_submit_directory", "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region", "sagemaker_container_log_level", "sagemaker_job_name",
    "default_user_module_name", "_tuning_objective_metric", "sagemaker_s3_output",
)
DISTRIBUTION_FLAGS = (
    "sagemaker_mpi_enabled", "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled", "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled", "sagemaker_multi_worker_mirrored_strategy_enabled",
    "sagemaker_torch_distributed_enabled",
)
# Host variables handed to the training process; everything else of the agent's environment
# (which is the server's: it may hold the server's own AWS secrets) stays out.
PASSTHROUGH = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SHELL",
               "PYTHONPATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE",
               "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
               "http_proxy", "https_proxy", "no_proxy")
PASSTHROUGH_PREFIXES = ("LC_",)
# the directory trainforge is imported from (its parent on sys.path)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(trainforge.__file__)))


def decode(value: Any) -> Any:
    """A hyperparameter value JSON-decoded where it decodes, else as it is."""
    if not isinstance(value, (str, bytes, bytearray)):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def decoded_hyperparameters(request: dict[str, Any]) -> dict[str, Any]:
    return {k: decode(v) for k, v in (request.get("HyperParameters") or {}).items()}


def split_hyperparameters(decoded: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user hyperparameters, sagemaker ones) as the toolkit's ``split_by_criteria`` does."""
    sm = {k: v for k, v in decoded.items() if k in SAGEMAKER_HYPERPARAMETERS or k.startswith("sagemaker_")}
    return {k: v for k, v in decoded.items() if k not in sm}, sm


def env_value(value: Any) -> str:
    """``mapping.to_env_vars`` formatting: strings raw, None empty, else compact sorted JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin1")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def arg_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin1")
    return str(value)


def cmd_args(hps: dict[str, Any]) -> list[str]:
    """``mapping.to_cmd_args``: keys sorted, ``--key value`` (``-k`` for one letter), dicts as k=v,..."""
    args: list[str] = []
    for key in sorted(hps):
        name = arg_text(key)
        args.append((f"--{name}" if len(name) > 1 else f"-{name}") if name else "")
        value = hps[key]
        if hasattr(value, "items"):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append(arg_text(value))
    return args


def training_env(spec: dict[str, Any], paths: Paths) -> dict[str, Any]:
    """The toolkit's ``Environment`` as a dict: the value of SM_TRAINING_ENV."""
    request = spec["request"]
    user_env = request.get("Environment") or {}
    hps, sm_hps = split_hyperparameters(decoded_hyperparameters(request))
    framework_params = {k: v for k, v in sm_hps.items() if k not in SAGEMAKER_HYPERPARAMETERS}
    rc = layout.resource_config(spec)
    idc = layout.input_data_config(spec)
    groups = rc["instance_groups"]
    current_group = rc["current_group_name"]
    group_hosts: list[str] = next((g["hosts"] for g in groups if g["instance_group_name"] == current_group), [])
    if "sagemaker_distribution_instance_groups" in framework_params:
        dist_groups = list(framework_params["sagemaker_distribution_instance_groups"] or [])
    else:
        dist_groups = [current_group] if any(framework_params.get(f) for f in DISTRIBUTION_FLAGS) else []
    dist_hosts = [h for g in groups if g["instance_group_name"] in dist_groups for h in g["hosts"]]
    all_hosts = rc["hosts"]
    master = dist_hosts[0] if dist_hosts else all_hosts[0]
    entry_point = user_env.get("SAGEMAKER_PROGRAM") or sm_hps.get("sagemaker_program")
    module_name = str(entry_point) if entry_point is not None else None
    if module_name and module_name.endswith(".py"):
        module_name = module_name[:-3]
    mp = hps.get("mp_parameters")
    return {
        "additional_framework_parameters": framework_params,
        "channel_input_dirs": {c: paths.container("input", "data", c) for c in idc},
        "current_host": spec["host"],
        "current_instance_group": current_group,
        "current_instance_group_hosts": group_hosts,
        "current_instance_type": rc["current_instance_type"],
        "distribution_hosts": dist_hosts,
        "distribution_instance_groups": dist_groups,
        "framework_module": user_env.get("SAGEMAKER_TRAINING_MODULE"),
        "hosts": all_hosts,
        "hyperparameters": hps,
        "input_config_dir": paths.container("input", "config"),
        "input_data_config": idc,
        "input_dir": paths.container("input"),
        "instance_groups": [g["instance_group_name"] for g in groups],
        "instance_groups_dict": {g["instance_group_name"]: g for g in groups},
        "is_hetero": len(groups) > 1,
        "is_master": spec["host"] == master,
        "is_modelparallel_enabled": bool(mp) and mp != {} if mp is not None else None,
        "is_smddpmprun_installed": False,
        "is_smddprun_installed": False,
        "job_name": spec["job_name"],
        "log_level": sm_hps.get("sagemaker_container_log_level", 20),
        "master_hostname": master,
        "model_dir": paths.container("model"),
        "module_dir": str(sm_hps.get("sagemaker_submit_directory") or paths.container("code")),
        "module_name": module_name,
        "network_interface_name": rc["network_interface_name"],
        "num_cpus": int(spec.get("num_cpus") or os.cpu_count() or 1),
        "num_gpus": len(spec["gpus"]) if "gpus" in spec else int(spec.get("num_gpus") or 0),
        "num_neurons": 0,
        "output_data_dir": paths.container("output", "data"),
        "output_dir": paths.container("output"),
        "output_intermediate_dir": paths.container("output", "intermediate"),
        "resource_config": rc,
        "user_entry_point": entry_point,
    }


def sm_variables(spec: dict[str, Any], paths: Paths) -> dict[str, str]:
    """Every SM_* variable (the toolkit's ``Environment.to_env_vars``)."""
    te = training_env(spec, paths)
    v: dict[str, Any] = {
        "hosts": te["hosts"], "network_interface_name": te["network_interface_name"],
        "hps": te["hyperparameters"], "user_entry_point": te["user_entry_point"],
        "framework_params": te["additional_framework_parameters"],
        "resource_config": te["resource_config"], "input_data_config": te["input_data_config"],
        "output_data_dir": te["output_data_dir"], "channels": sorted(te["channel_input_dirs"]),
        "current_host": te["current_host"], "current_instance_type": te["current_instance_type"],
        "current_instance_group": te["current_instance_group"],
        "current_instance_group_hosts": te["current_instance_group_hosts"],
        "instance_groups": te["instance_groups"], "instance_groups_dict": te["instance_groups_dict"],
        "distribution_instance_groups": te["distribution_instance_groups"], "is_hetero": te["is_hetero"],
        "module_name": te["module_name"], "log_level": te["log_level"],
        "framework_module": te["framework_module"], "input_dir": te["input_dir"],
        "input_config_dir": te["input_config_dir"], "output_dir": te["output_dir"],
        "num_cpus": te["num_cpus"], "num_gpus": te["num_gpus"], "model_dir": te["model_dir"],
        "module_dir": te["module_dir"], "training_env": te, "user_args": cmd_args(te["hyperparameters"]),
        "output_intermediate_dir": te["output_intermediate_dir"],
    }
    for name, path in te["channel_input_dirs"].items():
        v[f"channel_{name}"] = path
    for key, value in te["hyperparameters"].items():
        v[f"hp_{key}"] = value
    return {f"SM_{str(k).upper()}": env_value(val) for k, val in v.items()}


def credentials_uri(spec: dict[str, Any]) -> str:
    return spec["control_url"].rstrip("/") + CREDENTIALS_PATH


def aws_variables(spec: dict[str, Any]) -> dict[str, str]:
    """Region, S3 endpoint and the container-credentials pair (never a plain secret)."""
    env = {"AWS_REGION": spec["region"], "AWS_DEFAULT_REGION": spec["region"]}
    if spec.get("s3_endpoint_url"):
        env["S3_ENDPOINT_URL"] = spec["s3_endpoint_url"]
        env["AWS_ENDPOINT_URL_S3"] = spec["s3_endpoint_url"]
    if not network_isolated(spec):  # SageMaker gives an isolated container no credentials either
        # on the sandbox's job network the server's port is out of reach: the agent serves them inside;
        # in a Slurm node's namespace, on the node's loopback (spec "credentials_url", agent/container.py)
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = (
            f"http://{CREDENTIALS_ADDRESS}{SANDBOX_CREDENTIALS_PATH}" if spec.get("network") == "job"
            else spec.get("credentials_url") or credentials_uri(spec))
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = spec["token"]
    return env


def base_variables(host_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in host_env.items() if k in PASSTHROUGH or k.startswith(PASSTHROUGH_PREFIXES)}


def build(spec: dict[str, Any], paths: Paths, host_env: dict[str, str] | None = None) -> dict[str, str]:
    """The complete environment of the training process.

    Layers, later wins: the host's harmless variables (``PASSTHROUGH``); defaults a framework image
    has (``PYTHONUNBUFFERED``, ``MASTER_ADDR``/``MASTER_PORT``, the runtime's bin directory first on
    PATH) and the instance's GPUs (``CUDA_VISIBLE_DEVICES``/``NVIDIA_VISIBLE_DEVICES``, see
    ``sandbox/gpus.py``); the request's Environment; then what the platform owns (job name/ARN, AWS_*, SM_*,
    SAGEMAKER_BASE_DIR without namespaces).
    """
    if (spec.get("runtime") or {}).get("kind") == PULL:
        return image_variables(spec)
    host_env = dict(os.environ if host_env is None else host_env)
    env = base_variables(host_env)
    python = (spec.get("runtime") or {}).get("python")
    if python:
        bin_dir = os.path.dirname(python)
        env["PATH"] = bin_dir + os.pathsep + env["PATH"] if env.get("PATH") else bin_dir
        # an interpreter of the catalog other than the server's (a virtualenv of its own) runs
        # trainforge's script-mode and built-in modules from the package the sandbox mounts read-only
        entries = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
        if PACKAGE_ROOT not in entries:
            env["PYTHONPATH"] = os.pathsep.join([*entries, PACKAGE_ROOT])
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PYTHONUNBUFFERED"] = "TRUE"
    env["PYTHONDONTWRITEBYTECODE"] = "TRUE"
    env["MASTER_ADDR"] = hosts(spec)[0]
    env["MASTER_PORT"] = MASTER_PORT
    env.update(gpu_env.instance_variables(spec))  # its own GPUs, not the host's (the request may narrow them)
    env.update({str(k): str(v) for k, v in (spec["request"].get("Environment") or {}).items()})
    env["TRAINING_JOB_NAME"] = spec["job_name"]
    env["TRAINING_JOB_ARN"] = spec["job_arn"]
    env["CURRENT_HOST"] = spec["host"]
    env.update(aws_variables(spec))
    env.update(sm_variables(spec, paths))
    if paths.container_ml != "/opt/ml":
        env["SAGEMAKER_BASE_DIR"] = paths.container_ml
    return env


def image_variables(spec: dict[str, Any]) -> dict[str, str]:
    """The environment of a container image's process, as SageMaker gives it (CONTRACT.md §2): the
    image's ``Env``, then the instance's GPUs, the request's Environment, the job's name and ARN
    and the AWS variables. No ``SM_*``: the image's own toolkit computes them from /opt/ml."""
    from trainforge.agent.image import DEFAULT_PATH, env_of  # a container image's job alone

    config = (spec.get("runtime") or {}).get("config") or {}
    env = env_of(config.get("env") or [])
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root")
    env["HOSTNAME"] = spec["host"]
    env.update(gpu_env.instance_variables(spec))
    env.update({str(k): str(v) for k, v in (spec["request"].get("Environment") or {}).items()})
    env["TRAINING_JOB_NAME"] = spec["job_name"]
    env["TRAINING_JOB_ARN"] = spec["job_arn"]
    env.update(aws_variables(spec))
    return env


def command(spec: dict[str, Any]) -> list[str]:
    """The argv to run (CONTRACT.md §3): entrypoint + arguments.

    ``ContainerEntrypoint`` replaces the image's entrypoint and ``ContainerArguments`` the
    arguments; the arguments default to ``train`` (SageMaker passes it to every container, like
    ``docker run IMAGE train``). A leading ``python``/``python3`` means the runtime's interpreter.
    """
    runtime = spec.get("runtime") or {}
    algo = spec["request"].get("AlgorithmSpecification") or {}
    image_entry = ((runtime.get("config") or {}).get("entrypoint") or []) if runtime.get("kind") == PULL else []
    entry = list(algo.get("ContainerEntrypoint") or image_entry or runtime.get("command") or [])
    args = list(algo["ContainerArguments"]) if algo.get("ContainerArguments") else ["train"]
    if not entry and runtime.get("kind") == PULL:  # as ``docker run IMAGE train``: the arguments are the command
        return args
    if not entry:
        raise ValueError("the image has no entrypoint and the request gives no ContainerEntrypoint")
    if entry[0] in ("python", "python3") and runtime.get("python"):
        entry[0] = runtime["python"]
    return entry + args
