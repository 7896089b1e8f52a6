"""The Seldon Core v1 user model that serves a registered closedloop model version.

``seldon-core-microservice closedloop.serving.model.ClosedLoopModel --service-type MODEL``
runs :class:`ClosedLoopModel` in each gunicorn worker (and in the gRPC process).

Parameters (``PREDICTIVE_UNIT_PARAMETERS``, a JSON list of ``{name, value, type}``,
declared and typed in :mod:`closedloop.serving.parameters`; values may arrive as strings
from deployments made before the types):

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
* **Answering.** ``predict_raw`` takes the message as parsed JSON (REST) or protobuf
  (gRPC), so the wrapper's own conversions to and from numpy are skipped; the rows
  go through the version's compiled row plan and feature transform (see
  :class:`closedloop.serving.loading.ServedVersion`).
* **Input checks.** Every bad request is a 400 with a message (never a 500): see
  :mod:`closedloop.serving.messages` for the message shapes and limits (size, nesting;
  checked in a Flask hook, :mod:`closedloop.serving.hooks`, before the wrapper reads
  the body, and for gRPC in ``predict_raw`` and ``send_feedback_raw``) and
  :func:`closedloop.ml.schema.check_frame` for names, order, width, types and ranges.
  Over gRPC a 400 is ``INVALID_ARGUMENT`` (:mod:`closedloop.serving.grpc_status`).
* **Explanations.** With ``meta.tags.explain`` true, the response's ``meta.tags``
  carry per-row XGBoost contributions (:func:`closedloop.ml.explain.explain_rows`);
  other requests pay nothing for it.
* **Request logger** (local mode). With ``request_logger_url`` set, Flask hooks send
  the CloudEvents the Seldon executor sends in a cluster: the request (before the
  model answers, whatever it answers), the response of a successful prediction, and
  feedback; the ``Seldon-Puid`` header joins them and is returned. REST only: gRPC
  requests are not logged (local traffic is REST). Graph routes a MODEL node does not
  serve (``/transform-input``, ``/route`` ...) answer 404.
* **Metrics** (the wrapper's metrics port): see :mod:`closedloop.serving.metrics`;
  recorded in place with ``prometheus_client``, not returned to the wrapper.
* **Metadata.** The wrapper asks for ``init_metadata()`` once, before the workers
  start, so ``/metadata`` describes the version served at start-up; ``meta.tags`` of
  every response name the version that answered it.

Module layout: :mod:`~closedloop.serving.loading` (loading and checking a version),
:mod:`~closedloop.serving.watcher` (the champion watcher),
:mod:`~closedloop.serving.hooks` (Flask hooks), :mod:`~closedloop.serving.metrics`
(Prometheus metrics), :mod:`~closedloop.serving.metadata` (``/metadata``); this module
joins them into the class the wrapper loads.

This module must never import kfp (protobuf 5 here, 6 there); a test checks it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from flask import has_request_context
from google.protobuf import json_format
from seldon_core.flask_utils import SeldonMicroserviceException
from seldon_core.proto import prediction_pb2
from seldon_core.user_model import SeldonNotImplementedError, SeldonResponse
from seldon_core.utils import get_request_path, json_to_seldon_message, seldon_message_to_json

from closedloop.ml.explain import BASE_VALUE_KEY, explain_rows
from closedloop.ml.schema import SchemaError
from closedloop.ml.train import encode_target
from closedloop.registry import CHAMPION_ALIAS, Registry
from closedloop.serving import metrics
from closedloop.serving.hooks import RequestHooks, bad_request
from closedloop.serving.loading import ServedVersion
from closedloop.serving.messages import (
    MessageError,
    MessageTooLarge,
    check_feedback_message,
    check_prediction_message,
    check_size,
    explain_flag,
    message_rows,
)
from closedloop.serving.metadata import start_metadata
from closedloop.serving.parameters import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_POLL_SECONDS,
    parse_parameter,
)
from closedloop.serving.request_logger import LOGGER_MODES
from closedloop.serving.watcher import VersionWatcher
from closedloop.storage import S3Settings, Store

logger = logging.getLogger(__name__)

REASON_NOT_READY = "MODEL_NOT_READY"
REASON_REFUSED = "MODEL_REFUSED"
REASON_INTERNAL = "MICROSERVICE_INTERNAL_ERROR"

MAX_EXPLAINED_ROWS = 100
# Answers up to this many rows are built from Python lists (cheaper for a few rows).
_LIST_ROWS = 64


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _plain_lists(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with numpy arrays as lists (protobuf takes no numpy)."""
    data = answer["data"]
    if isinstance(data.get("ndarray"), np.ndarray):
        data["ndarray"] = data["ndarray"].tolist()
    tensor = data.get("tensor")
    if tensor is not None and isinstance(tensor["values"], np.ndarray):
        tensor["values"] = tensor["values"].tolist()
    return answer


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
        # Typed by Seldon (closedloop.serving.parameters); strings from older deployments.
        self.poll_seconds = float(parse_parameter("poll_seconds", poll_seconds))
        self.max_rows = int(parse_parameter("max_rows", max_rows))
        self.max_request_bytes = int(parse_parameter("max_request_bytes", max_request_bytes))
        self.request_logger_url = _text(request_logger_url)
        self.request_logger_mode = _text(request_logger_mode) or "all"
        if self.request_logger_mode not in LOGGER_MODES:
            raise ValueError(
                f"parameter request_logger_mode={request_logger_mode!r} must be one of "
                f"{LOGGER_MODES}"
            )
        # Process-local state is created in load(), which runs after the fork in every
        # gunicorn worker and in the gRPC process; __init__ runs once, before the fork.
        self._watcher: VersionWatcher | None = None
        self._started_pid: int | None = None
        self._start_lock = threading.Lock()
        self._quality = metrics.FeedbackQuality()
        self._request_path: dict[str, str] | None = None
        hooks = RequestHooks(
            self.model_name,
            max_rows=self.max_rows,
            max_request_bytes=self.max_request_bytes,
            request_logger_url=self.request_logger_url,
            request_logger_mode=self.request_logger_mode,
        )
        # The wrapper registers this blueprint on its Flask app (its only extension
        # point there): see closedloop.serving.hooks.
        self.model_error_handler = hooks.blueprint()

    # -- life cycle -------------------------------------------------------------------
    def load(self) -> None:
        """Start loading the model in a background thread (once per process)."""
        with self._start_lock:
            if self._started_pid == os.getpid():
                return
            self._started_pid = os.getpid()
            registry = Registry(Store(S3Settings.from_env()), self.registry_uri)
            self._watcher = VersionWatcher(
                registry, self.model_name, self.version, self.poll_seconds
            )
            self._watcher.start()

    @property
    def _served(self) -> ServedVersion | None:
        watcher = self._watcher
        return watcher.served if watcher is not None else None

    def health_status(self) -> dict[str, Any]:
        """Answer ``/health/status``: 200 once a version serves, 503 before.

        Raises:
            SeldonMicroserviceException: 503 with ``MODEL_REFUSED`` (the version failed
                its checks) or ``MODEL_NOT_READY`` (still loading or retrying).
        """
        watcher = self._watcher
        served = watcher.served if watcher is not None else None
        failure = watcher.failure if watcher is not None else None
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
        watcher = self._watcher
        served = watcher.served if watcher is not None else None
        if served is None:
            metrics.REJECTED.labels("not_ready").inc()
            failure = watcher.failure if watcher is not None else None
            detail = failure.message if failure is not None else "the model is still loading"
            raise SeldonMicroserviceException(
                f"model not ready: {detail}", status_code=503, reason=REASON_NOT_READY
            )
        return served

    # -- prediction -------------------------------------------------------------------
    def predict_raw(self, request: Any) -> Any:
        """Answer a prediction message: JSON (REST) or a ``SeldonMessage`` (gRPC).

        Returns:
            A Seldon message of the same kind: class probabilities (named by class) or
            values, and the model name and version (and explanations when
            ``meta.tags.explain`` is true) in ``meta.tags``.

        Raises:
            SeldonMicroserviceException: 400 for a bad request, 503 before a version
                serves, 500 for a failure of the server itself.
        """
        if isinstance(request, prediction_pb2.SeldonMessage):
            # REST bodies were checked by a Flask hook; gRPC ones arrive here directly.
            body = self._checked_grpc_message(request, check_prediction_message)
            return json_to_seldon_message(_plain_lists(self._answer(body)))
        return self._answer(request)

    def _checked_grpc_message(self, message: Any, check: Callable[..., object]) -> dict[str, Any]:
        """A gRPC message as JSON, checked as the Flask hook checks a REST body.

        Args:
            message: A ``SeldonMessage`` or ``Feedback``.
            check: :func:`~closedloop.serving.messages.check_prediction_message` or
                :func:`~closedloop.serving.messages.check_feedback_message`.

        Raises:
            SeldonMicroserviceException: 400 for a message over ``max_request_bytes``, one
                JSON cannot carry (NaN or Infinity in a ``google.protobuf.Value``) or one
                the check refuses (too deeply nested, malformed).
        """
        try:
            check_size(message.ByteSize(), self.max_request_bytes, what="request message")
            try:
                body = seldon_message_to_json(message)
            except json_format.Error as exc:
                raise MessageError(f"the message cannot be read as JSON: {exc}") from exc
            check(body, max_rows=self.max_rows)
        except MessageTooLarge as exc:
            metrics.REJECTED.labels("too_large").inc()
            raise bad_request(str(exc)) from exc
        except MessageError as exc:
            metrics.REJECTED.labels("bad_message").inc()
            raise bad_request(str(exc)) from exc
        return body

    def _answer(self, body: Any) -> dict[str, Any]:
        try:
            return self._predict(body)
        except SeldonMicroserviceException:
            raise
        # Whatever else fails is the server's fault: a 500 that says so, logged.
        except Exception as exc:
            logger.exception("prediction failed")
            raise SeldonMicroserviceException(
                f"internal error: {type(exc).__name__}: {exc}",
                status_code=500,
                reason=REASON_INTERNAL,
            ) from exc

    def _predict(self, body: Any) -> dict[str, Any]:
        started = time.perf_counter()
        served = self._require_served()
        meta = body.get("meta") if isinstance(body, Mapping) else None
        try:
            explain = explain_flag(meta)
            message = message_rows(body, max_rows=self.max_rows)
            checked = served.check_message(message)
            if explain and not served.explainable:
                raise MessageError(
                    f"{served.model_name} {served.version} has no per-row explanations "
                    "(they need an XGBoost model, binary or regression)"
                )
            if explain and checked.n_rows > MAX_EXPLAINED_ROWS:
                raise MessageError(
                    f"explanations are limited to {MAX_EXPLAINED_ROWS} rows per request, "
                    f"got {checked.n_rows}"
                )
        except (MessageError, SchemaError) as exc:
            metrics.REJECTED.labels("bad_input").inc()
            raise bad_request(str(exc)) from exc
        output = served.predict_checked(checked)
        tags: dict[str, Any] = dict((meta or {}).get("tags") or {})
        tags.update(model_name=served.model_name, model_version=served.version)
        if explain:
            tags["explanation"] = {
                "method": "xgboost_shap",
                "units": "log-odds" if served.classification else "prediction",
                "base_value_key": BASE_VALUE_KEY,
                "rows": explain_rows(served.pipeline, checked.frame, served.schema),
            }
            metrics.EXPLANATIONS.labels(served.version).inc(checked.n_rows)
        metrics.record_prediction(
            served.version,
            served.class_names if served.classification else None,
            output,
            checked.unknown_categories,
            time.perf_counter() - started,
        )
        return self._response(body, message.encoding, served, output, tags, meta)

    def _response(
        self,
        body: Mapping[str, Any],
        encoding: str,
        served: ServedVersion,
        output: np.ndarray,
        tags: dict[str, Any],
        meta: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Build the answer as the wrapper's ``construct_response_json`` would."""
        # A large answer stays a numpy array: the app's JSON provider (orjson) writes it
        # directly, far faster than a list of Python floats. predict_raw turns it into
        # lists for a gRPC answer.
        values = np.ascontiguousarray(output) if len(output) > _LIST_ROWS else output.tolist()
        if encoding == "ndarray":
            data: dict[str, Any] = {"ndarray": values}
        else:
            flat = values.ravel() if isinstance(values, np.ndarray) else output.ravel().tolist()
            data = {"tensor": {"values": flat, "shape": list(output.shape)}}
        data["names"] = served.class_names if served.classification else []
        out_meta: dict[str, Any] = {"tags": tags}
        puid = (meta or {}).get("puid")
        if puid:
            out_meta["puid"] = puid
        if self._request_path is None:
            self._request_path = get_request_path()
        request_path = {**self._request_path, **((meta or {}).get("requestPath") or {})}
        if request_path:
            out_meta["requestPath"] = request_path
        return {"data": data, "meta": out_meta}

    def tags(self) -> dict[str, str]:
        """Model name and served version, added to ``meta.tags`` of the wrapper's answers."""
        served = self._served
        return {
            "model_name": self.model_name,
            "model_version": served.version if served is not None else "none",
        }

    # -- feedback ---------------------------------------------------------------------
    def send_feedback_raw(self, feedback: prediction_pb2.Feedback) -> Any:
        """Check a gRPC feedback message before the wrapper converts it to numpy.

        The wrapper hands every feedback message here first, as a ``Feedback`` proto.
        A malformed one (ragged rows, a tensor whose shape does not match) would fail
        in its conversion, before :meth:`send_feedback`, with an internal error. REST
        bodies were checked by a Flask hook (a Flask request is in progress); gRPC
        messages are checked here.

        Raises:
            SeldonMicroserviceException: 400 for a malformed gRPC message.
            SeldonNotImplementedError: Otherwise, always: the wrapper then goes on as
                without this method, and calls :meth:`send_feedback`.
        """
        if not has_request_context():
            self._checked_grpc_message(feedback, check_feedback_message)
        raise SeldonNotImplementedError("feedback is answered by send_feedback")

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
            rows = np.asarray(features)
            if rows.size == 0:
                raise MessageError(
                    "feedback with truth needs the predicted rows in request.data (names + ndarray)"
                )
            checked = served.check_array(rows, feature_names, max_rows=self.max_rows)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != checked.n_rows:
                raise MessageError(
                    f"truth has shape {list(labels.shape)}: expected one label per row "
                    f"({checked.n_rows})"
                )
            first, second = self._score(served, checked, labels)
        except (MessageError, SchemaError) as exc:
            metrics.REJECTED.labels("bad_feedback").inc()
            raise bad_request(str(exc)) from exc
        self._quality.record(served.version, served.classification, checked.n_rows, first, second)
        return SeldonResponse(
            [], tags={"model_version": served.version, "feedback_rows": checked.n_rows}
        )

    def _score(
        self, served: ServedVersion, checked: Any, labels: np.ndarray
    ) -> tuple[float, float]:
        """Return (correct, 0) for classification or (abs error, squared error) sums."""
        output = served.predict_checked(checked)
        if served.classification:
            try:
                target = encode_target(pd.Series(labels), served.schema)
            except ValueError as exc:
                raise MessageError(f"truth does not fit the model's classes: {exc}") from exc
            return float(np.sum(output.argmax(axis=1) == target)), 0.0
        try:
            target = labels.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise MessageError(f"truth must hold numbers for a regression model: {exc}") from exc
        if not np.all(np.isfinite(target)):
            raise MessageError("truth holds NaN or infinite values")
        errors = output - target
        return float(np.abs(errors).sum()), float((errors**2).sum())

    # -- metadata ---------------------------------------------------------------------
    def init_metadata(self) -> dict[str, Any]:
        """Describe inputs and outputs (see :func:`closedloop.serving.metadata.start_metadata`)."""
        return start_metadata(self.registry_uri, self.model_name, self.version)
