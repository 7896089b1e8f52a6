"""The Seldon Core v1 user model that serves a registered closedloop model version.

``seldon-core-microservice closedloop.serving.model.ClosedLoopModel --service-type MODEL``
runs :class:`ClosedLoopModel` in each gunicorn worker (and in the gRPC process).

Parameters (``PREDICTIVE_UNIT_PARAMETERS``, a JSON list of ``{name, value, type}``;
values may arrive as strings):

* ``registry_uri`` — registry root, ``s3://bucket/prefix`` or a local directory;
* ``model_name`` — registered model name;
* ``version`` — ``champion`` (default: follow the champion pointer) or ``v<N>``;
* ``poll_seconds`` — how often the champion pointer is read (default 10; 0 reads it
  once, at start-up);
* ``max_rows`` — most rows per request (default 10000);
* ``max_request_bytes`` — largest request body (default 16 MiB);
* ``request_logger_url`` — local mode only: where to send request-logger CloudEvents
  (see :mod:`closedloop.serving.request_logger`); empty in a cluster, where the
  Seldon executor sends them;
* ``request_logger_mode`` — ``request``, ``response`` or ``all`` (default), as the
  executor's ``logger.mode``.

Environment: ``CLOSEDLOOP_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and the other variables of
:meth:`closedloop.storage.S3Settings.from_env`; for request-logger events the ones the
Seldon operator sets: ``PREDICTIVE_UNIT_ID``, ``SELDON_DEPLOYMENT_ID``, ``PREDICTOR_ID``,
``POD_NAME``, ``POD_NAMESPACE`` and ``PREDICTIVE_UNIT_HTTP_SERVICE_PORT``.

Behaviour:

* **Loading.** ``load()`` returns at once and a background thread fetches the version
  through :meth:`closedloop.registry.Registry.fetch` (every file's sha256 checked
  against the manifest), unpickles the pipeline, parses the schema and predicts a probe
  row. Only then does the version serve. Until then ``/health/status`` answers 503
  (``MODEL_NOT_READY`` while loading or retrying, ``MODEL_REFUSED`` when the version
  failed its checks) and predictions answer 503. Loading in the background keeps a
  slow S3 from tripping gunicorn's worker timeout.
* **Champion swap.** The same thread reads the champion pointer every
  ``poll_seconds``; a new version is loaded and checked completely, then one reference
  is replaced. A request reads that reference once, so it is served entirely by one
  version. If the new version fails, the old one keeps serving, the failure is logged
  and counted (``closedloop_model_load_failures_total``,
  ``closedloop_model_load_failing``) and reported by ``/health/status``.
* **Input checks.** Every bad request is a 400 with a message (never a 500): see
  :mod:`closedloop.serving.messages` for the message shapes (checked in a Flask hook
  before the wrapper converts the body) and :func:`closedloop.ml.schema.check_frame`
  for names, order, width and types.
* **Explanations.** With ``meta.tags.explain`` true, the response's ``meta.tags``
  carry per-row XGBoost contributions (:func:`closedloop.ml.explain.explain_rows`);
  other requests pay nothing for it.
* **Request logger** (local mode). With ``request_logger_url`` set, Flask hooks send
  the CloudEvents the Seldon executor sends in a cluster: the request (before the
  model answers, whatever it answers), the response of a successful prediction, and
  feedback; the ``Seldon-Puid`` header joins them and is returned. REST only: gRPC
  requests are not logged (local traffic is REST). Graph routes a MODEL node does not
  serve (``/transform-input``, ``/route`` ...) answer 404.
* **Metrics** (the wrapper's metrics port): ``closedloop_prediction_requests_total``,
  ``closedloop_predicted_rows_total``, ``closedloop_predicted_class_total``,
  ``closedloop_predict_duration_seconds`` (histogram),
  ``closedloop_rejected_requests_total``, ``closedloop_unknown_categories_total``,
  ``closedloop_feedback_rows_total``, ``closedloop_feedback_correct_total`` and
  ``closedloop_feedback_accuracy`` (classification) or
  ``closedloop_feedback_abs_error_total``, ``closedloop_feedback_squared_error_total``,
  ``closedloop_feedback_mae`` and ``closedloop_feedback_rmse`` (regression), all per
  ``version``; ``closedloop_model_swaps_total``, ``closedloop_model_load_failures_total``,
  ``closedloop_served_version``, ``closedloop_model_load_failing`` and
  ``closedloop_request_logger_events_total``, ``closedloop_explanations_total``.
  Seldon's wrapper collects them only after a successful call, so counts of rejected
  requests appear with the next call (readiness probes make one every few seconds),
  and it labels every series with the call's ``method`` (``predict``, ``feedback``,
  ``health``): gauges exist once per method.
* **Metadata.** The wrapper asks for ``init_metadata()`` once, before the workers
  start, so ``/metadata`` describes the version served at start-up; ``meta.tags`` of
  every response name the version that answered it.

This module must never import kfp (protobuf 5 here, 6 there); a test checks it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from flask import Blueprint, Response, g, jsonify
from flask import request as flask_request
from seldon_core.flask_utils import SeldonMicroserviceException
from seldon_core.user_model import SeldonNotImplementedError, SeldonResponse
from sklearn.pipeline import Pipeline
from werkzeug.exceptions import HTTPException, NotFound
from xgboost import XGBModel

from closedloop.errors import ClosedLoopError
from closedloop.ml.explain import BASE_VALUE_KEY, explain_rows
from closedloop.ml.schema import InputSchema, SchemaError, check_frame
from closedloop.ml.train import encode_target
from closedloop.registry import (
    CHAMPION_ALIAS,
    IntegrityError,
    Registry,
    RegistryError,
    VersionNotFoundError,
)
from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE
from closedloop.serving.messages import (
    MessageError,
    check_cells,
    check_feedback_message,
    check_names,
    check_prediction_message,
    records_frame,
)
from closedloop.serving.request_logger import (
    LOGGER_MODES,
    PUID_HEADER,
    EventContext,
    RequestLogger,
)
from closedloop.storage import S3Settings, StorageError, Store

logger = logging.getLogger(__name__)

REASON_BAD_DATA = "MICROSERVICE_BAD_DATA"
REASON_NOT_READY = "MODEL_NOT_READY"
REASON_REFUSED = "MODEL_REFUSED"
REASON_INTERNAL = "MICROSERVICE_INTERNAL_ERROR"

MAX_EXPLAINED_ROWS = 100
DEFAULT_POLL_SECONDS = 10.0
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024

# Flask endpoint names of the wrapper's prediction and feedback routes (all their URLs).
_PREDICT_ENDPOINT = "Predict"
_FEEDBACK_ENDPOINT = "SendFeedback"
_OTHER_GRAPH_ENDPOINTS = frozenset({"TransformInput", "TransformOutput", "Route", "Aggregate"})
_FIRST_RETRY_SECONDS = 1.0
_MAX_RETRY_SECONDS = 30.0
_TRUE_FLAGS = (True, 1, "true", "True", "TRUE", "1", "yes")
_FALSE_FLAGS = (False, 0, "false", "False", "FALSE", "0", "no", None)


class ArtifactError(ClosedLoopError):
    """A version's files passed their digests but are not a servable model."""


@dataclass(frozen=True)
class ServedVersion:
    """A model version loaded and checked, ready to answer requests.

    Attributes:
        model_name: Registered model name.
        version: Version id (``v<N>``).
        pipeline: The fitted features + model pipeline.
        schema: Its input schema.
        loaded_at: When it passed its checks (epoch seconds).
    """

    model_name: str
    version: str
    pipeline: Pipeline
    schema: InputSchema
    loaded_at: float

    @property
    def classification(self) -> bool:
        """Whether the model predicts classes."""
        return self.schema.task == "classification"

    @property
    def class_names(self) -> list[str]:
        """Class labels as strings, in the order of the probability columns."""
        return [str(c) for c in self.schema.classes or ()]

    @property
    def explainable(self) -> bool:
        """Whether per-row contributions exist (XGBoost, binary or regression)."""
        model = getattr(self.pipeline, "named_steps", {}).get("model")
        return isinstance(model, XGBModel) and (
            not self.classification or len(self.schema.classes or ()) == 2
        )


@dataclass(frozen=True)
class LoadFailure:
    """Why the last attempt to load a version failed.

    Attributes:
        version: The version (or ``champion`` when the pointer could not be read).
        message: What went wrong.
        permanent: True when retrying cannot help (digest mismatch, unusable artifact,
            missing pinned version).
    """

    version: str
    message: str
    permanent: bool


def probe_frame(schema: InputSchema) -> pd.DataFrame:
    """Build one plausible input row from the schema, to check a version predicts.

    Returns:
        The coerced row, as :func:`check_frame` returns it.
    """
    row: list[Any] = []
    for spec in schema.columns:
        if spec.kind in ("numeric", "boolean"):
            low = 0.0 if spec.minimum is None else spec.minimum
            high = low if spec.maximum is None else spec.maximum
            row.append(0.0 if spec.kind == "boolean" else (low + high) / 2)
        elif spec.kind == "categorical":
            row.append(spec.allowed[0] if spec.allowed else "probe")
        else:
            row.append("2026-01-01T00:00:00")
    return check_frame([row], schema).frame


def load_version(registry: Registry, model_name: str, version: str) -> ServedVersion:
    """Fetch a version, verify its digests, load it and check it predicts.

    Args:
        registry: Where the version lives.
        model_name: Registered model name.
        version: A version id or ``champion``.

    Returns:
        The loaded version; its files are deleted once in memory.

    Raises:
        IntegrityError: A file is missing or its sha256 differs from the manifest.
        VersionNotFoundError: No such version (or no champion yet).
        StorageError: S3 could not be reached or refused access.
        ArtifactError: The files do not make a servable model.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"closedloop-{model_name}-"))
    try:
        local = registry.fetch(model_name, version, workdir)
        try:
            schema = InputSchema.from_json((local.path / SCHEMA_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{SCHEMA_FILE} is not a valid input schema: {exc}") from exc
        try:
            pipeline = joblib.load(local.path / MODEL_FILE)
        # Unpickling runs arbitrary code paths (missing modules, version skew, truncated
        # streams); whatever it raises, the artifact is unusable.
        except Exception as exc:
            raise ArtifactError(
                f"{MODEL_FILE} could not be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        served = ServedVersion(model_name, local.version, pipeline, schema, time.time())
        check_servable(served)
        return served
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check_servable(served: ServedVersion) -> None:
    """Predict a probe row and check the output's shape and values.

    Raises:
        ArtifactError: If the pipeline cannot predict or answers nonsense.
    """
    pipeline, schema = served.pipeline, served.schema
    if not hasattr(pipeline, "predict"):
        raise ArtifactError(f"{MODEL_FILE} holds a {type(pipeline).__name__}, not a pipeline")
    try:
        frame = probe_frame(schema)
        if served.classification:
            output = np.asarray(pipeline.predict_proba(frame), dtype=np.float64)
            expected: tuple[int, ...] = (1, len(schema.classes or ()))
        else:
            output = np.asarray(pipeline.predict(frame), dtype=np.float64)
            expected = (1,)
    # The probe is the pipeline's first call in this process: anything it raises
    # (a feature step that does not match the schema, a missing method) disqualifies it.
    except Exception as exc:
        raise ArtifactError(
            f"the pipeline fails on a probe row ({type(exc).__name__}: {exc})"
        ) from exc
    if output.shape != expected:
        raise ArtifactError(
            f"the pipeline answers shape {output.shape} for one row, not {expected}"
        )
    if not np.all(np.isfinite(output)):
        raise ArtifactError("the pipeline answers non-finite values for a probe row")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _number(name: str, value: Any, *, minimum: float, integer: bool = False) -> float:
    """Parse a numeric parameter that may arrive as a string."""
    try:
        number = float(_text(value))
    except ValueError as exc:
        raise ValueError(f"parameter {name}={value!r} is not a number") from exc
    if not math.isfinite(number) or number < minimum or (integer and not number.is_integer()):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"parameter {name}={value!r} must be {kind} >= {minimum:g}")
    return number


def _flag(value: Any) -> bool:
    """Read ``meta.tags.explain``: a JSON boolean, 0/1 or a true/false string."""
    if value in _TRUE_FLAGS:
        return True
    if value in _FALSE_FLAGS:
        return False
    raise MessageError(f"meta.tags.explain must be true or false, got {value!r}")


def _bad_request(message: str) -> SeldonMicroserviceException:
    return SeldonMicroserviceException(message, status_code=400, reason=REASON_BAD_DATA)


def _metric(kind: str, key: str, value: float, tags: Mapping[str, str]) -> dict[str, Any]:
    # A fresh tags dict each time: the wrapper adds a "method" tag to it in place.
    return {"type": kind, "key": key, "value": value, "tags": dict(tags)}


class _Metrics:
    """Custom metrics in the form Seldon's wrapper takes them.

    The wrapper adds COUNTER values to its totals, records TIMER values (milliseconds)
    in a histogram and sets GAUGE values, after each successful call, in the request
    thread. Per-call metrics are therefore kept per thread, so each call reports its
    own; process-wide counts (rejections, swaps, logger events) are kept as totals and
    reported as the difference since the previous report, with whichever call comes next.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._reported: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def add(self, key: str, value: float = 1.0, **tags: str) -> None:
        """Add to a process-wide counter."""
        index = (key, tuple(sorted(tags.items())))
        with self._lock:
            self._totals[index] = self._totals.get(index, 0.0) + value

    def set_total(self, key: str, total: float, **tags: str) -> None:
        """Set a process-wide counter kept elsewhere (e.g. by the request logger)."""
        with self._lock:
            self._totals[(key, tuple(sorted(tags.items())))] = total

    def call(self, kind: str, key: str, value: float, **tags: str) -> None:
        """Record a metric of the current call (COUNTER, TIMER or GAUGE)."""
        pending = self._local.__dict__.setdefault("pending", [])
        pending.append(_metric(kind, key, value, tags))

    def discard_call(self) -> None:
        """Forget the current call's metrics (the call failed after recording some)."""
        self._local.__dict__.pop("pending", None)

    def collect(self, gauges: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
        """Return this call's metrics, new process-wide counts and *gauges*."""
        out: list[dict[str, Any]] = self._local.__dict__.pop("pending", [])
        with self._lock:
            for index, total in self._totals.items():
                delta = total - self._reported.get(index, 0.0)
                if delta:
                    key, tags = index
                    out.append(_metric("COUNTER", key, delta, dict(tags)))
                    self._reported[index] = total
        out.extend(gauges)
        return out


class ClosedLoopModel:
    """Serve one registered model version (pinned, or the champion) with Seldon's wrapper.

    See the module docstring for the parameters, the environment and the behaviour.

    Args:
        registry_uri: Registry root (``s3://bucket/prefix`` or a directory).
        model_name: Registered model name.
        version: ``champion`` or ``v<N>``.
        poll_seconds: Champion poll interval in seconds; 0 reads the pointer once.
        max_rows: Most rows per request.
        max_request_bytes: Largest request body in bytes.
        request_logger_url: Where to post request-logger CloudEvents (local mode);
            empty for none.
        request_logger_mode: ``request``, ``response`` or ``all``.

    Raises:
        ValueError: A parameter is missing or malformed (the server does not start).
    """

    def __init__(
        self,
        registry_uri: str = "",
        model_name: str = "",
        version: str = CHAMPION_ALIAS,
        poll_seconds: str | float = DEFAULT_POLL_SECONDS,
        max_rows: str | int = DEFAULT_MAX_ROWS,
        max_request_bytes: str | int = DEFAULT_MAX_REQUEST_BYTES,
        request_logger_url: str = "",
        request_logger_mode: str = "all",
    ) -> None:
        self.registry_uri = _text(registry_uri)
        self.model_name = _text(model_name)
        self.version = _text(version) or CHAMPION_ALIAS
        if not self.registry_uri or not self.model_name:
            raise ValueError(
                "ClosedLoopModel needs the parameters registry_uri and model_name "
                "(PREDICTIVE_UNIT_PARAMETERS)"
            )
        self.poll_seconds = _number("poll_seconds", poll_seconds, minimum=0.0)
        self.max_rows = int(_number("max_rows", max_rows, minimum=1, integer=True))
        self.max_request_bytes = int(
            _number("max_request_bytes", max_request_bytes, minimum=1024, integer=True)
        )
        self.request_logger_url = _text(request_logger_url)
        self.request_logger_mode = _text(request_logger_mode) or "all"
        if self.request_logger_mode not in LOGGER_MODES:
            raise ValueError(
                f"parameter request_logger_mode={request_logger_mode!r} must be one of "
                f"{LOGGER_MODES}"
            )
        # Process-local state is created in load(), which runs after the fork in every
        # gunicorn worker and in the gRPC process; __init__ runs once, before the fork.
        self._served: ServedVersion | None = None
        self._failure: LoadFailure | None = None
        self._refused: dict[str, LoadFailure] = {}
        self._quality: dict[str, list[float]] = {}
        self._quality_lock = threading.Lock()
        self._metrics = _Metrics()
        self._local = threading.local()
        self._started_pid: int | None = None
        self._start_lock = threading.Lock()
        self._registry: Registry | None = None
        self._request_logger: RequestLogger | None = None
        self._request_logger_pid: int | None = None
        # The wrapper registers this blueprint on its Flask app (its only extension
        # point there): hooks that check messages before the wrapper converts them,
        # emit request-logger events, and answer HTTP errors in Seldon's format.
        self.model_error_handler = self._blueprint()

    # -- life cycle -------------------------------------------------------------------
    def load(self) -> None:
        """Start loading the model in a background thread (once per process)."""
        with self._start_lock:
            if self._started_pid == os.getpid():
                return
            self._started_pid = os.getpid()
            self._registry = Registry(Store(S3Settings.from_env()), self.registry_uri)
            threading.Thread(target=self._watch, name="closedloop-model-watch", daemon=True).start()
        logger.info(
            "loading %s %s from %s (champion poll every %gs)",
            self.model_name,
            self.version,
            self.registry_uri,
            self.poll_seconds,
        )

    @property
    def _follows_champion(self) -> bool:
        return self.version == CHAMPION_ALIAS and self.poll_seconds > 0

    def _watch(self) -> None:
        retry = _FIRST_RETRY_SECONDS
        while True:
            keep_watching = self._refresh()
            if not keep_watching:
                return
            if self._served is None:
                delay, retry = retry, min(retry * 2, _MAX_RETRY_SECONDS)
            else:
                delay, retry = self.poll_seconds, _FIRST_RETRY_SECONDS
            time.sleep(delay)

    def _refresh(self) -> bool:
        """Load the wanted version if it is not the served one; return whether to go on."""
        assert self._registry is not None
        current = self._served
        try:
            target = self._registry.resolve(self.model_name, self.version)
        except VersionNotFoundError as exc:
            self._note_failure(LoadFailure(self.version, str(exc), permanent=False))
            return True
        except (StorageError, RegistryError) as exc:
            permanent = not isinstance(exc, StorageError)
            self._note_failure(LoadFailure(self.version, str(exc), permanent))
            return not permanent or self._follows_champion
        if current is not None and current.version == target:
            self._failure = None
            return self._follows_champion
        if target in self._refused:
            self._failure = self._refused[target]
            return self._follows_champion
        try:
            new = load_version(self._registry, self.model_name, target)
        except StorageError as exc:
            self._note_failure(LoadFailure(target, str(exc), permanent=False))
            return True
        except VersionNotFoundError as exc:
            # A pinned version that does not exist never will; a champion pointer may
            # name a version whose manifest is not visible yet.
            pinned = self.version != CHAMPION_ALIAS
            self._note_failure(LoadFailure(target, str(exc), permanent=pinned))
            return not pinned
        except (IntegrityError, RegistryError, ArtifactError) as exc:
            # Registry messages name the model and version already; artifact ones do not.
            where = f"{self.model_name} {target}: " if isinstance(exc, ArtifactError) else ""
            failure = LoadFailure(target, f"refused: {where}{exc}", permanent=True)
            self._refused[target] = failure
            self._note_failure(failure)
            return self._follows_champion
        self._served = new
        self._failure = None
        self._metrics.add("closedloop_model_swaps_total", version=new.version)
        if current is None:
            logger.info("serving %s %s", self.model_name, new.version)
        else:
            logger.info(
                "swapped %s from %s to %s without a restart",
                self.model_name,
                current.version,
                new.version,
            )
        return self._follows_champion

    def _note_failure(self, failure: LoadFailure) -> None:
        previous = self._failure
        self._failure = failure
        reason = "refused" if failure.permanent else "unavailable"
        self._metrics.add(
            "closedloop_model_load_failures_total", version=failure.version, reason=reason
        )
        if previous == failure:
            return
        served = self._served
        if served is not None:
            logger.error(
                "keeping %s %s: loading %s failed: %s",
                served.model_name,
                served.version,
                failure.version,
                failure.message,
            )
        else:
            logger.error(
                "cannot serve %s yet (%s): %s",
                self.model_name,
                "refused" if failure.permanent else "will retry",
                failure.message,
            )

    def health_status(self) -> dict[str, Any]:
        """Answer ``/health/status``: 200 once a version serves, 503 before.

        Raises:
            SeldonMicroserviceException: 503 with ``MODEL_REFUSED`` (the version failed
                its checks) or ``MODEL_NOT_READY`` (still loading or retrying).
        """
        served = self._served
        failure = self._failure
        if served is None:
            if failure is not None and failure.permanent:
                raise SeldonMicroserviceException(
                    f"not ready: {failure.message}", status_code=503, reason=REASON_REFUSED
                )
            detail = failure.message if failure is not None else "loading"
            raise SeldonMicroserviceException(
                f"not ready: {self.model_name} {self.version}: {detail}",
                status_code=503,
                reason=REASON_NOT_READY,
            )
        return {
            "ready": True,
            "model_name": served.model_name,
            "model_version": served.version,
            "following": self.version,
            "loaded_at": served.loaded_at,
            "last_load_error": failure.message if failure is not None else None,
        }

    def _require_served(self) -> ServedVersion:
        served = self._served
        if served is None:
            self._metrics.add("closedloop_rejected_requests_total", reason="not_ready")
            failure = self._failure
            detail = failure.message if failure is not None else "the model is still loading"
            raise SeldonMicroserviceException(
                f"model not ready: {detail}", status_code=503, reason=REASON_NOT_READY
            )
        return served

    # -- prediction -------------------------------------------------------------------
    def predict(
        self, X: Any, features_names: Iterable[str] | None = None, **kwargs: Any
    ) -> SeldonResponse:
        """Predict class probabilities (classification) or values (regression).

        Args:
            X: The rows: an array from ``data`` or the ``jsonData`` records.
            features_names: ``data.names``, if sent.
            **kwargs: ``meta`` (the request's ``meta``), from the wrapper.

        Returns:
            The predictions, with the model name and version (and explanations when
            ``meta.tags.explain`` is true) in ``meta.tags``.

        Raises:
            SeldonMicroserviceException: 400 for a bad request, 503 before a version
                serves, 500 for a failure of the server itself.
        """
        try:
            return self._predict(X, features_names, kwargs.get("meta"))
        except SeldonMicroserviceException:
            self._metrics.discard_call()
            raise
        # The wrapper calls predict() again without meta when it raises a TypeError,
        # which would run a failed request twice: every failure leaves as a 500 here.
        except Exception as exc:
            self._metrics.discard_call()
            logger.exception("prediction failed")
            raise SeldonMicroserviceException(
                f"internal error: {type(exc).__name__}: {exc}",
                status_code=500,
                reason=REASON_INTERNAL,
            ) from exc

    def _predict(self, X: Any, names: Any, meta: Any) -> SeldonResponse:
        started = time.perf_counter()
        served = self._require_served()
        self._local.served = served
        try:
            explain = _flag(((meta or {}).get("tags") or {}).get("explain"))
            rows, unknown = self._rows(X, names, served.schema)
            if explain and not served.explainable:
                raise MessageError(
                    f"{served.model_name} {served.version} has no per-row explanations "
                    "(they need an XGBoost model, binary or regression)"
                )
            if explain and len(rows) > MAX_EXPLAINED_ROWS:
                raise MessageError(
                    f"explanations are limited to {MAX_EXPLAINED_ROWS} rows per request, "
                    f"got {len(rows)}"
                )
        except (MessageError, SchemaError) as exc:
            self._metrics.add("closedloop_rejected_requests_total", reason="bad_input")
            raise _bad_request(str(exc)) from exc
        if served.classification:
            output = np.asarray(served.pipeline.predict_proba(rows), dtype=np.float64)
        else:
            output = np.asarray(served.pipeline.predict(rows), dtype=np.float64)
        tags: dict[str, Any] = {"model_name": served.model_name, "model_version": served.version}
        if explain:
            contributions = explain_rows(served.pipeline, rows, served.schema)
            tags["explanation"] = {
                "method": "xgboost_shap",
                "units": "log-odds" if served.classification else "prediction",
                "base_value_key": BASE_VALUE_KEY,
                "rows": contributions,
            }
            self._metrics.call("COUNTER", "closedloop_explanations_total", len(rows))
        self._record_prediction(served, output, unknown, started)
        return SeldonResponse(output, tags=tags, metrics=self._report())

    def _rows(self, X: Any, names: Any, schema: InputSchema) -> tuple[pd.DataFrame, dict[str, int]]:
        """Turn the wrapper's payload into coerced rows, or raise MessageError/SchemaError."""
        if isinstance(X, str | bytes):
            raise MessageError(
                "strData and binData payloads are not supported: send data.ndarray with "
                "names, or jsonData records"
            )
        if not isinstance(X, Mapping | list | np.ndarray):
            raise MessageError(f"unsupported payload of type {type(X).__name__}")
        # REST bodies were counted before conversion; gRPC ones arrive here directly.
        if isinstance(X, np.ndarray):
            count = X.shape[0] if X.ndim == 2 else 1
        else:
            count = 1 if isinstance(X, Mapping) else len(X)
        if count > self.max_rows:
            raise MessageError(f"too many rows: {count}, the limit is {self.max_rows} per request")
        if isinstance(X, np.ndarray):
            check_cells(X)
            check = check_frame(X, schema, check_names(names))
        else:
            check = check_frame(records_frame(X, schema.feature_names), schema)
        return check.frame, dict(check.unknown_categories)

    def _record_prediction(
        self, served: ServedVersion, output: np.ndarray, unknown: Mapping[str, int], started: float
    ) -> None:
        version = served.version
        call = self._metrics.call
        call("COUNTER", "closedloop_prediction_requests_total", 1, version=version)
        call("COUNTER", "closedloop_predicted_rows_total", len(output), version=version)
        if served.classification:
            counts = np.bincount(output.argmax(axis=1), minlength=output.shape[1])
            for name, count in zip(served.class_names, counts, strict=True):
                if count:
                    call(
                        "COUNTER",
                        "closedloop_predicted_class_total",
                        int(count),
                        version=version,
                        predicted_class=name,
                    )
        for column, count in unknown.items():
            call(
                "COUNTER",
                "closedloop_unknown_categories_total",
                count,
                version=version,
                column=column,
            )
        call(
            "TIMER",
            "closedloop_predict_duration_seconds",
            (time.perf_counter() - started) * 1000,
            version=version,
        )

    def class_names(self) -> list[str]:
        """Names of the probability columns of the version that answered this thread's call."""
        served = getattr(self._local, "served", None) or self._served
        return served.class_names if served is not None else []

    def tags(self) -> dict[str, str]:
        """Model name and served version, added to every response's ``meta.tags``."""
        served = self._served
        return {
            "model_name": self.model_name,
            "model_version": served.version if served is not None else "none",
        }

    # -- feedback ---------------------------------------------------------------------
    def send_feedback(
        self,
        features: Any,
        feature_names: Iterable[str] | None,
        reward: float,
        truth: Any,
        routing: int | None = None,
    ) -> SeldonResponse | None:
        """Score the served version on labelled rows and update its quality metrics.

        The rows are predicted again by the version serving when the label arrives, so
        the metrics measure that version (the signal of concept drift). Feedback with
        a reward and no truth changes nothing here (the wrapper counts rewards).

        Args:
            features: ``request.data`` rows of the feedback.
            feature_names: Their names.
            reward: The reward (counted by the wrapper).
            truth: ``truth.data``: one label per row.
            routing: Unused (single-model graph).

        Returns:
            None for reward-only feedback, else the version and row count in ``meta.tags``.

        Raises:
            SeldonMicroserviceException: 400 for rows or labels that do not fit, 503
                before a version serves.
        """
        served = self._require_served()
        labels = np.asarray(truth if truth is not None else [], dtype=object)
        if labels.size == 0:
            return None
        try:
            if np.asarray(features).size == 0:
                raise MessageError(
                    "feedback with truth needs the predicted rows in request.data (names + ndarray)"
                )
            rows, _ = self._rows(np.asarray(features), feature_names, served.schema)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != len(rows):
                raise MessageError(
                    f"truth has shape {list(labels.shape)}: expected one label per row "
                    f"({len(rows)})"
                )
            stats = self._score(served, rows, labels)
        except (MessageError, SchemaError) as exc:
            self._metrics.add("closedloop_rejected_requests_total", reason="bad_feedback")
            raise _bad_request(str(exc)) from exc
        self._record_feedback(served, len(rows), stats)
        return SeldonResponse(
            [],
            tags={"model_version": served.version, "feedback_rows": len(rows)},
            metrics=self._report(),
        )

    def _score(
        self, served: ServedVersion, rows: pd.DataFrame, labels: np.ndarray
    ) -> tuple[float, float]:
        """Return (correct, 0) for classification or (abs error, squared error) sums."""
        if served.classification:
            try:
                target = encode_target(pd.Series(labels), served.schema)
            except ValueError as exc:
                raise MessageError(f"truth does not fit the model's classes: {exc}") from exc
            predicted = np.asarray(served.pipeline.predict_proba(rows)).argmax(axis=1)
            return float(np.sum(predicted == target)), 0.0
        try:
            target = labels.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise MessageError(f"truth must hold numbers for a regression model: {exc}") from exc
        if not np.all(np.isfinite(target)):
            raise MessageError("truth holds NaN or infinite values")
        errors = np.asarray(served.pipeline.predict(rows), dtype=np.float64) - target
        return float(np.abs(errors).sum()), float((errors**2).sum())

    def _record_feedback(self, served: ServedVersion, n: int, stats: tuple[float, float]) -> None:
        version = served.version
        with self._quality_lock:
            totals = self._quality.setdefault(version, [0.0, 0.0, 0.0])
            totals[0] += n
            totals[1] += stats[0]
            totals[2] += stats[1]
            rows, first, second = totals
        call = self._metrics.call
        call("COUNTER", "closedloop_feedback_rows_total", n, version=version)
        if served.classification:
            call("COUNTER", "closedloop_feedback_correct_total", stats[0], version=version)
            call("GAUGE", "closedloop_feedback_accuracy", first / rows, version=version)
        else:
            call("COUNTER", "closedloop_feedback_abs_error_total", stats[0], version=version)
            call("COUNTER", "closedloop_feedback_squared_error_total", stats[1], version=version)
            call("GAUGE", "closedloop_feedback_mae", first / rows, version=version)
            call("GAUGE", "closedloop_feedback_rmse", math.sqrt(second / rows), version=version)

    # -- metrics and metadata ---------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        """Process-wide counts and gauges not reported yet (see the module docstring).

        Predictions and feedback hand their metrics to the wrapper with their answer
        (:meth:`_report`), so this is called with something new mostly for health checks.

        Raises:
            SeldonNotImplementedError: When there is nothing to report: the wrapper then
                skips a round trip to its cross-process metrics store.
        """
        reported = self._local.__dict__.pop("reported", False)
        items = self._metrics.collect([] if reported else self._gauges())
        if not items:
            raise SeldonNotImplementedError("nothing new to report")
        return items

    def _report(self) -> list[dict[str, Any]]:
        """This call's metrics, new process-wide counts and the gauges, for one answer.

        The wrapper stores the metrics of an answer and those of :meth:`metrics` in two
        round trips to a multiprocessing manager; carrying everything in the answer
        saves one per request.
        """
        self._local.reported = True
        return self._metrics.collect(self._gauges())

    def _gauges(self) -> list[dict[str, Any]]:
        """Current gauges; also refreshes the request logger's counts."""
        request_logger = self._request_logger
        if request_logger is not None and self._request_logger_pid == os.getpid():
            stats = request_logger.stats()
            key = "closedloop_request_logger_events_total"
            self._metrics.set_total(key, stats.sent, outcome="sent")
            self._metrics.set_total(key, stats.dropped, outcome="dropped_queue_full")
            self._metrics.set_total(key, stats.failed, outcome="send_failed")
        served = self._served
        version = float(served.version[1:]) if served is not None else 0.0
        failing = float(self._failure is not None)
        return [
            _metric("GAUGE", "closedloop_served_version", version, {}),
            _metric("GAUGE", "closedloop_model_load_failing", failing, {}),
        ]

    def init_metadata(self) -> dict[str, Any]:
        """Describe inputs and outputs from the schema of the version served at start-up.

        Called once by the wrapper before the workers start. If the version cannot be
        read yet, only the name is published (and a warning logged): metadata must not
        keep the server from starting.
        """
        base: dict[str, Any] = {
            "name": self.model_name,
            "versions": [self.version],
            "platform": "closedloop",
        }
        # Few attempts: the server's start waits for this call.
        store = Store(S3Settings.from_env().with_(max_attempts=2))
        workdir = Path(tempfile.mkdtemp(prefix="closedloop-metadata-"))
        try:
            local = Registry(store, self.registry_uri).fetch(self.model_name, self.version, workdir)
            schema = InputSchema.from_json((local.path / SCHEMA_FILE).read_text())
        except (ClosedLoopError, OSError, ValueError) as exc:
            logger.warning("no input/output metadata for %s: %s", self.model_name, exc)
            return base
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return {**base, "versions": [local.version], **schema_metadata(schema)}

    # -- Flask hooks (REST only) ------------------------------------------------------
    def _blueprint(self) -> Blueprint:
        blueprint = Blueprint("closedloop", __name__)
        blueprint.record_once(
            lambda state: state.app.config.update(MAX_CONTENT_LENGTH=self.max_request_bytes)
        )
        blueprint.before_app_request(self._before_request)
        blueprint.after_app_request(self._after_request)
        blueprint.app_errorhandler(HTTPException)(_http_error)
        return blueprint

    def _before_request(self) -> None:
        endpoint = flask_request.endpoint
        if endpoint in _OTHER_GRAPH_ENDPOINTS:
            # A MODEL node answers predictions and feedback; the wrapper would echo the
            # input on these routes, or fail with a 500 on a malformed one.
            raise NotFound(f"{flask_request.path} is not served by a MODEL node")
        if endpoint not in (_PREDICT_ENDPOINT, _FEEDBACK_ENDPOINT):
            return
        size = flask_request.content_length
        if size is not None and size > self.max_request_bytes:
            self._metrics.add("closedloop_rejected_requests_total", reason="too_large")
            raise _bad_request(
                f"request body of {size} bytes exceeds the limit of {self.max_request_bytes} "
                "bytes (max_request_bytes): split the rows into several requests"
            )
        raw, body, error = _read_message()
        request_logger = self._process_request_logger()
        if request_logger is not None:
            # As the executor: the request is logged before the model sees it, whatever
            # the model answers; the Seldon-Puid joins it to its response.
            puid = flask_request.headers.get(PUID_HEADER) or str(uuid.uuid4())
            g.closedloop_puid = puid
            if raw is not None:
                log = (
                    request_logger.log_request
                    if endpoint == _PREDICT_ENDPOINT
                    else request_logger.log_feedback
                )
                log(puid, raw, _logged_content_type())
        try:
            if error is not None:
                raise MessageError(error)
            if endpoint == _PREDICT_ENDPOINT:
                check_prediction_message(body, max_rows=self.max_rows)
            else:
                check_feedback_message(body, max_rows=self.max_rows)
        except MessageError as exc:
            self._metrics.add("closedloop_rejected_requests_total", reason="bad_message")
            raise _bad_request(str(exc)) from exc

    def _after_request(self, response: Response) -> Response:
        puid = g.get("closedloop_puid")
        if puid is None:
            return response
        response.headers[PUID_HEADER] = puid
        request_logger = self._process_request_logger()
        if (
            request_logger is not None
            and flask_request.endpoint == _PREDICT_ENDPOINT
            and response.status_code == 200
        ):
            request_logger.log_response(
                puid, response.get_data(), response.content_type or "application/json"
            )
        return response

    def _process_request_logger(self) -> RequestLogger | None:
        if not self.request_logger_url:
            return None
        if self._request_logger_pid != os.getpid():
            with self._start_lock:
                if self._request_logger_pid != os.getpid():
                    self._request_logger = RequestLogger(
                        self.request_logger_url,
                        event_context(self.model_name),
                        mode=self.request_logger_mode,  # type: ignore[arg-type]
                    )
                    self._request_logger_pid = os.getpid()
        return self._request_logger


def event_context(model_name: str, env: Mapping[str, str] | None = None) -> EventContext:
    """Build request-logger attributes from the variables the Seldon operator sets.

    Args:
        model_name: Stand-in for the SeldonDeployment name when none is set.
        env: The environment (``os.environ`` by default).

    Returns:
        The attributes of every event this server sends.
    """
    env = os.environ if env is None else env
    host = env.get("POD_NAME") or socket.gethostname()
    port = env.get("PREDICTIVE_UNIT_HTTP_SERVICE_PORT", "9000")
    return EventContext(
        source=f"http://{host}:{port}/",
        model_id=env.get("PREDICTIVE_UNIT_ID") or "model",
        inference_service_name=env.get("SELDON_DEPLOYMENT_ID") or model_name,
        namespace=env.get("POD_NAMESPACE") or "local",
        endpoint=env.get("PREDICTOR_ID") or "default",
    )


def _read_message() -> tuple[bytes | None, Any, str | None]:
    """Read the body the way the wrapper will: returns (raw bytes, parsed JSON, error).

    The wrapper takes a form field or query argument ``json`` first (Seldon's own
    client posts forms), then a JSON body. Parsing here caches the JSON for it.
    """
    if flask_request.mimetype == "multipart/form-data":
        return None, None, "multipart/form-data is not supported: send application/json"
    text = flask_request.form.get("json") or flask_request.args.get("json")
    if text:
        raw = text.encode("utf-8")
    elif flask_request.is_json:
        raw = flask_request.get_data(cache=True)
        body = flask_request.get_json(silent=True)
        if body is not None:
            return raw, body, None
    else:
        shown = flask_request.content_type or "none"
        return (
            None,
            None,
            f"Content-Type must be application/json (or a form field 'json'), got {shown}",
        )
    try:
        return raw, json.loads(raw), None
    except ValueError as exc:
        return raw, None, f"the body is not valid JSON: {exc}"


def _logged_content_type() -> str:
    # A form field holds JSON: log it as what it is.
    if flask_request.is_json:
        return flask_request.content_type or "application/json"
    return "application/json"


def _http_error(error: HTTPException) -> tuple[Response, int]:
    """Answer HTTP errors (404, 405, 413, ...) with their code, not the wrapper's 500."""
    # An oversized chunked body is refused while it is read: the same 400 as a
    # Content-Length over the limit.
    code = 400 if error.code == 413 else (error.code or 500)
    reason = REASON_BAD_DATA if code == 400 else f"HTTP_{code}"
    body = {"status": {"status": 1, "info": error.description, "code": -1, "reason": reason}}
    return jsonify(body), code


def schema_metadata(schema: InputSchema) -> dict[str, Any]:
    """Seldon metadata (inputs, outputs, custom) describing a schema.

    Inputs: an ``ndarray`` with the feature names, and ``jsonData`` records described
    by a JSON Schema. Outputs: class probabilities (named by class) or one value per row.
    """
    properties: dict[str, Any] = {}
    for spec in schema.columns:
        if spec.kind == "numeric":
            prop: dict[str, Any] = {"type": "number"}
            if spec.minimum is not None:
                prop["minimum"] = spec.minimum
            if spec.maximum is not None:
                prop["maximum"] = spec.maximum
        elif spec.kind == "boolean":
            prop = {"type": ["boolean", "number"], "enum": [True, False, 0, 1]}
        elif spec.kind == "categorical":
            # Unknown categories are accepted, so known ones are examples, not an enum.
            prop = {"type": "string"}
            if spec.allowed:
                prop["examples"] = list(spec.allowed)
        else:
            prop = {"type": "string", "format": "date-time"}
        if spec.nullable:
            prop["type"] = [*np.atleast_1d(prop["type"]).tolist(), "null"]
        properties[spec.name] = prop
    names = list(schema.feature_names)
    record_schema = {
        "type": "object",
        "properties": properties,
        "required": names,
        "additionalProperties": False,
    }
    if schema.task == "classification":
        classes = [str(c) for c in schema.classes or ()]
        outputs = [
            {"messagetype": "ndarray", "schema": {"names": classes, "shape": [len(classes)]}}
        ]
    else:
        outputs = [{"messagetype": "ndarray", "schema": {"shape": [1]}}]
    return {
        "inputs": [
            {"messagetype": "ndarray", "schema": {"names": names, "shape": [len(names)]}},
            {"messagetype": "jsonData", "schema": record_schema},
        ],
        "outputs": outputs,
        "custom": {
            "task": schema.task,
            "target": schema.target,
            "input_schema": json.dumps(schema.to_dict(), separators=(",", ":")),
        },
    }
