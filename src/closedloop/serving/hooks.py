"""Flask hooks on the wrapper's REST app: message checks, request logging, HTTP errors.

Seldon's wrapper registers the user model's ``model_error_handler`` blueprint on its
Flask app, its only extension point there. :class:`RequestHooks` uses it to

* read the body of predictions and feedback itself, at most ``max_request_bytes`` + 1
  bytes from the WSGI input whether it comes with a ``Content-Length`` or chunked, and
  refuse bodies over the limit, bodies nested too deeply and malformed messages with a
  400 before the wrapper reads them (see :mod:`closedloop.serving.messages`);
* answer graph routes a MODEL node does not serve (``/transform-input``, ``/route`` ...)
  with 404;
* send, in local mode, the request-logger CloudEvents the Seldon executor sends in a
  cluster: the request (before the model answers, whatever it answers), the response
  of a successful prediction, and feedback; the ``Seldon-Puid`` header joins them and
  is returned;
* answer HTTP errors (404, 405, 413 ...) in Seldon's format with their own code.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, g, jsonify
from flask import request as flask_request
from seldon_core.flask_utils import SeldonMicroserviceException
from werkzeug.exceptions import HTTPException, NotFound

from closedloop.serving import jsonio, metrics
from closedloop.serving.messages import (
    MessageError,
    MessageTooLarge,
    check_feedback_message,
    check_prediction_message,
    check_size,
    parse_json,
)
from closedloop.serving.request_logger import PUID_HEADER, EventContext, RequestLogger

REASON_BAD_DATA = "MICROSERVICE_BAD_DATA"

# Flask endpoint names of the wrapper's prediction and feedback routes (all their URLs).
PREDICT_ENDPOINT = "Predict"
FEEDBACK_ENDPOINT = "SendFeedback"
_OTHER_GRAPH_ENDPOINTS = frozenset({"TransformInput", "TransformOutput", "Route", "Aggregate"})
_READ_CHUNK = 1024 * 1024


def bad_request(message: str) -> SeldonMicroserviceException:
    """A 400 in Seldon's error format."""
    return SeldonMicroserviceException(message, status_code=400, reason=REASON_BAD_DATA)


class RequestHooks:
    """The blueprint's hooks for one model server process.

    Args:
        model_name: Stand-in deployment name for request-logger events.
        max_rows: Most rows per request.
        max_request_bytes: Largest request body.
        request_logger_url: Where to post request-logger CloudEvents; empty for none.
        request_logger_mode: ``request``, ``response`` or ``all``.
    """

    def __init__(
        self,
        model_name: str,
        *,
        max_rows: int,
        max_request_bytes: int,
        request_logger_url: str,
        request_logger_mode: str,
    ) -> None:
        self.model_name = model_name
        self.max_rows = max_rows
        self.max_request_bytes = max_request_bytes
        self.request_logger_url = request_logger_url
        self.request_logger_mode = request_logger_mode
        self._lock = threading.Lock()
        self._request_logger: RequestLogger | None = None
        self._request_logger_pid: int | None = None
        self._logger_counts = metrics.LoggerCounts()

    def _configure_app(self, state: Any) -> None:
        state.app.config.update(MAX_CONTENT_LENGTH=self.max_request_bytes)
        # The wrapper reads bodies with get_json() and answers with jsonify(): orjson.
        jsonio.install(state.app)

    def blueprint(self) -> Blueprint:
        """The blueprint to hand the wrapper as ``model_error_handler``."""
        blueprint = Blueprint("closedloop", __name__)
        blueprint.record_once(self._configure_app)
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
        if endpoint not in (PREDICT_ENDPOINT, FEEDBACK_ENDPOINT):
            return
        try:
            _read_body(self.max_request_bytes)
        except MessageTooLarge as exc:
            metrics.REJECTED.labels("too_large").inc()
            raise bad_request(str(exc)) from exc
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
                    if endpoint == PREDICT_ENDPOINT
                    else request_logger.log_feedback
                )
                log(puid, raw, _logged_content_type())
        try:
            if error is not None:
                raise MessageError(error)
            if endpoint == PREDICT_ENDPOINT:
                check_prediction_message(body, max_rows=self.max_rows)
            else:
                check_feedback_message(body, max_rows=self.max_rows)
        except MessageError as exc:
            metrics.REJECTED.labels("bad_message").inc()
            raise bad_request(str(exc)) from exc

    def _after_request(self, response: Response) -> Response:
        puid = g.get("closedloop_puid")
        if puid is None:
            return response
        response.headers[PUID_HEADER] = puid
        request_logger = self._process_request_logger()
        if (
            request_logger is not None
            and flask_request.endpoint == PREDICT_ENDPOINT
            and response.status_code == 200
        ):
            request_logger.log_response(
                puid, response.get_data(), response.content_type or "application/json"
            )
        if request_logger is not None:
            stats = request_logger.stats()
            self._logger_counts.sync(stats.sent, stats.dropped, stats.failed)
        return response

    def _process_request_logger(self) -> RequestLogger | None:
        if not self.request_logger_url:
            return None
        if self._request_logger_pid != os.getpid():
            with self._lock:
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


def _read_body(limit: int) -> None:
    """Read the request body, refusing one over *limit* bytes, and cache it for Flask.

    At most *limit* + 1 bytes are read from the WSGI input, with a ``Content-Length``
    (refused at once when it exceeds *limit*) or chunked (gunicorn ends the stream):
    werkzeug's own limit on a chunked body cuts it silently at ``MAX_CONTENT_LENGTH``.
    The bytes go where ``get_data``, ``get_json`` and form parsing read them.

    Raises:
        MessageTooLarge: If the body exceeds *limit*.
    """
    length = flask_request.content_length
    if length is not None:
        check_size(length, limit)
        wanted = length
    elif flask_request.environ.get("wsgi.input_terminated"):
        wanted = limit + 1
    else:
        # No length and a stream the server does not end: werkzeug reads nothing either.
        wanted = 0
    stream = flask_request.input_stream
    chunks: list[bytes] = []
    received = 0
    while received < wanted:
        chunk = stream.read(min(wanted - received, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    check_size(received, limit, more=length is None)
    # werkzeug's cache of the body (Request.get_data): the stream is consumed now.
    flask_request._cached_data = b"".join(chunks)  # type: ignore[attr-defined]


def _read_message() -> tuple[bytes | None, Any, str | None]:
    """Parse the body the way the wrapper will: returns (raw bytes, parsed JSON, error).

    The wrapper takes a form field or query argument ``json`` first (Seldon's own
    client posts forms), then a JSON body. Parsing here caches the JSON for it; a body
    too deep for Python's parser (a ``RecursionError``) is an error like invalid JSON.
    """
    if flask_request.mimetype == "multipart/form-data":
        return None, None, "multipart/form-data is not supported: send application/json"
    text = flask_request.form.get("json") or flask_request.args.get("json")
    if text:
        raw = text.encode("utf-8")
    elif flask_request.is_json:
        raw = flask_request.get_data(cache=True)
        try:
            body = flask_request.get_json(silent=True)
        except RecursionError:
            body = None
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
        return raw, parse_json(raw), None
    except MessageError as exc:
        return raw, None, str(exc)


def _logged_content_type() -> str:
    # A form field holds JSON: log it as what it is.
    if flask_request.is_json:
        return flask_request.content_type or "application/json"
    return "application/json"


def _http_error(error: HTTPException) -> tuple[Response, int]:
    """Answer HTTP errors (404, 405, 413, ...) with their code, not the wrapper's 500."""
    # werkzeug's 413 (a body over MAX_CONTENT_LENGTH on a route the hooks do not read):
    # the same 400 as the hooks' own size check.
    code = 400 if error.code == 413 else (error.code or 500)
    reason = REASON_BAD_DATA if code == 400 else f"HTTP_{code}"
    body = {"status": {"status": 1, "info": error.description, "code": -1, "reason": reason}}
    return jsonify(body), code
