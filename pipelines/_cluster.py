"""Settings that matter only on a cluster: S3 configuration and credentials as env vars.

``kfp.local`` ignores platform settings, so local runs take the same variables from the
process environment instead.
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask

S3_SECRET = "closedloop-s3-credentials"
S3_CONFIG_MAP = "closedloop-s3-settings"


def with_s3(task: PipelineTask) -> PipelineTask:
    """Give *task* the S3 endpoint (ConfigMap) and credentials (Secret) as environment variables."""
    kubernetes.use_secret_as_env(
        task,
        secret_name=S3_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )
    kubernetes.use_config_map_as_env(
        task,
        config_map_name=S3_CONFIG_MAP,
        config_map_key_to_env={
            "CLOSEDLOOP_S3_ENDPOINT": "CLOSEDLOOP_S3_ENDPOINT",
            "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION",
        },
        optional=True,  # no ConfigMap: AWS S3 and the default region
    )
    return task


def network_bound(task: PipelineTask) -> PipelineTask:
    """S3 access plus retries with backoff for a task that talks to the network."""
    with_s3(task)
    task.set_retry(
        num_retries=3, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="300s"
    )
    return task


def side_effect(task: PipelineTask) -> PipelineTask:
    """A task whose effect must happen on every run (register, promote, deploy): no cache."""
    network_bound(task)
    task.set_caching_options(False)
    return task
