"""The CloudEvent types and attributes the loop's processes exchange, in one place.

Two streams of binary-mode CloudEvents v1.0 cross process boundaries:

* the Seldon request logger (the executor in a cluster,
  :class:`closedloop.serving.request_logger.RequestLogger` locally) posts
  :data:`REQUEST_TYPE`, :data:`RESPONSE_TYPE` and :data:`FEEDBACK_TYPE` events to the
  drift sidecar (:mod:`closedloop.drift.sidecar.events`);
* the drift sidecar posts :data:`DRIFT_TYPE` events to the retrain trigger
  (:class:`closedloop.drift.sidecar.alarm.DriftAlarm`).

Senders and receivers import the names from here. Standard library only: the model
server (seldon-core, protobuf 5), the sidecar and the trigger (kfp, protobuf 6) all
load it.
"""

from __future__ import annotations

from collections.abc import Mapping

SPECVERSION = "1.0"
"""The only CloudEvents spec version sent and accepted."""

REQUIRED_ATTRIBUTES: tuple[str, ...] = ("id", "source", "type", "specversion")
"""Attributes a receiver requires as ``Ce-*`` headers. The SDK would make up a missing
id or specversion; a made-up id defeats the receivers' dedupe."""

REQUEST_TYPE = "io.seldon.serving.inference.request"
"""A prediction request, logged before the model answers."""
RESPONSE_TYPE = "io.seldon.serving.inference.response"
"""The model's answer to a request; ``Ce-Requestid`` joins the two."""
FEEDBACK_TYPE = "io.seldon.serving.feedback"
"""A Seldon ``Feedback`` message (features, truth, the response it answers)."""

SELDON_EVENT_KINDS: Mapping[str, str] = {
    REQUEST_TYPE: "request",
    RESPONSE_TYPE: "response",
    FEEDBACK_TYPE: "feedback",
}
"""Each request-logger ``Ce-Type`` and the short kind the sidecar names it by."""

DRIFT_TYPE = "io.closedloop.drift.detected"
"""A drift sidecar's alarm: a window that alerted, with the windows before it."""
