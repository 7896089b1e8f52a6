"""gRPC statuses that say what went wrong: a client's error is never INTERNAL or UNKNOWN.

seldon-core 1.19's gRPC servicer (``seldon_core.wrapper.SeldonModelGRPC``) calls the
user model and lets every exception escape, so grpcio answers
``SeldonMicroserviceException(status_code=400)`` with ``UNKNOWN`` ("Exception calling
application"); and a message grpcio cannot decode (one nested past protobuf's
recursion limit of 100, about 35 levels of JSON) with ``INTERNAL`` ("Exception
deserializing request!"). :class:`ErrorStatusInterceptor` wraps every unary method of
the server it is given to:

* a message that does not decode: ``INVALID_ARGUMENT``, with the decoder's reason;
* a ``SeldonMicroserviceException``: the status of its HTTP code (400
  ``INVALID_ARGUMENT``, 404 ``NOT_FOUND``, 413 and 429 ``RESOURCE_EXHAUSTED``, 503
  ``UNAVAILABLE``, any other 4xx ``INVALID_ARGUMENT``, the rest ``INTERNAL``) with its
  message, and its reason (``MICROSERVICE_BAD_DATA``, ``MODEL_NOT_READY`` ...) in the
  trailing metadata ``seldon-reason``;
* any other exception: ``INTERNAL`` with its type and message, logged.

A message over grpcio's receive limit (4 MiB unless the pod annotation
``seldon.io/grpc-max-message-size`` raises it) is refused by grpcio itself with
``RESOURCE_EXHAUSTED``. :mod:`closedloop.serving.microservice` installs the interceptor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from seldon_core.flask_utils import SeldonMicroserviceException

logger = logging.getLogger(__name__)

REASON_METADATA = "seldon-reason"
_STATUS_OF_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_of(http_code: int) -> grpc.StatusCode:
    """The gRPC status that stands for an HTTP status code."""
    if http_code in _STATUS_OF_HTTP:
        return _STATUS_OF_HTTP[http_code]
    if 400 <= http_code < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


class _Undecodable:
    """Stands for a request message that did not decode (grpcio would abort INTERNAL)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _decoding(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:
            return _Undecodable(f"{type(exc).__name__}: {exc}")

    return decode


def _answering(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def answer(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request message cannot be decoded ({request.reason}); it may be nested "
                "too deeply or not be the method's message type",
            )
        try:
            return behaviour(request, context)
        except SeldonMicroserviceException as exc:
            context.set_trailing_metadata(((REASON_METADATA, str(exc.reason)),))
            context.abort(status_of(exc.status_code), str(exc.message))
        except Exception as exc:
            logger.exception("gRPC call failed")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    return answer


class ErrorStatusInterceptor(grpc.ServerInterceptor):
    """Answer undecodable messages and exceptions with statuses (see the module docstring)."""

    def __init__(self) -> None:
        # One wrapped handler per served method (unknown names are not kept).
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Return the method's handler, wrapped when it is unary-unary (all Seldon's are)."""
        method = handler_call_details.method  # type: ignore[attr-defined]
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        deserializer = handler.request_deserializer
        wrapped = grpc.unary_unary_rpc_method_handler(
            _answering(handler.unary_unary),
            request_deserializer=_decoding(deserializer) if deserializer else None,
            response_serializer=handler.response_serializer,
        )
        self._handlers[method] = wrapped
        return wrapped
