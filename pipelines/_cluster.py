"""Settings that matter only on a cluster: S3 configuration and credentials as env vars.

``kfp.local`` ignores platform settings, so local runs take the same variables from the
process environment instead.
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask

from closedloop.storage.settings import (
    S3_SECRET,
    S3_SECRET_KEYS,
    S3_SETTINGS_CONFIG_MAP,
    S3_SETTINGS_KEYS,
)


def with_s3(task: PipelineTask) -> PipelineTask:
    """Give *task* the S3 endpoint (ConfigMap) and credentials (Secret) as environment variables."""
    kubernetes.use_secret_as_env(
        task, secret_name=S3_SECRET, secret_key_to_env=dict(S3_SECRET_KEYS)
    )
    # ConfigMap *key* → env var (kfp.kubernetes maps key to variable). Optional, so a
    # missing ConfigMap does not leave the pod stuck in CreateContainerConfigError;
    # instead the step fails at once with a message (S3Settings.from_env).
    kubernetes.use_config_map_as_env(
        task,
        config_map_name=S3_SETTINGS_CONFIG_MAP,
        config_map_key_to_env=dict(S3_SETTINGS_KEYS),
        optional=True,
    )
    return task


def network_bound(task: PipelineTask) -> PipelineTask:
    """S3 access plus retries with backoff for a task that talks to the network."""
    with_s3(task)
    task.set_retry(
        num_retries=3, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="300s"
    )
    return task


def uncached(task: PipelineTask) -> PipelineTask:
    """Never serve *task* from KFP's cache: it reads state that changes between runs.

    KFP v2's cache key (backend/src/v2/cacheutils/cache.go, ``GenerateCacheKey``) holds
    the input parameter values, the input artifacts' names, the output specs, the
    image, the command and the env, never what an ``s3://`` URI or the registry holds
    now. A step that reads an object by URI (the data, the archive, the champion) would
    be replayed from the first run's output by a recurring run or by a rerun on changed
    data. Steps downstream of an uncached one need nothing: their input artifacts are
    new, so their keys change.
    """
    task.set_caching_options(False)
    return task


def side_effect(task: PipelineTask) -> PipelineTask:
    """A task whose effect must happen on every run (register, promote, deploy): no cache."""
    network_bound(task)
    return uncached(task)
