"""``seldon-core-microservice`` with closedloop's metrics, gRPC statuses and bind address.

Run as ``python -m closedloop.serving.microservice <MODEL_NAME> [wrapper options]``: the
same command line as Seldon's ``seldon-core-microservice`` (see
``seldon_core/microservice.py`` in seldon-core 1.19), which it runs after these changes:

* ``PROMETHEUS_MULTIPROC_DIR`` is set (a fresh private directory unless given) before
  ``prometheus_client`` is imported, so the metrics of :mod:`closedloop.serving.metrics`
  that every gunicorn worker and the gRPC process record land in files there;
* the wrapper's metrics endpoint (``SeldonMetrics.generate_metrics``, which serves only
  the wrapper's own metrics) also serves those, merged across processes by
  ``prometheus_client.multiprocess.MultiProcessCollector``;
* ``SeldonMetrics.update`` returns at once when it is handed no metrics, instead of
  two round trips to the wrapper's metrics manager after every request;
* the gRPC server answers client errors with ``INVALID_ARGUMENT`` and the like, not
  ``UNKNOWN`` or ``INTERNAL`` (:class:`closedloop.serving.grpc_status.ErrorStatusInterceptor`);
* with ``CLOSEDLOOP_BIND_HOST`` set (an IP address), the REST server (gunicorn, or
  Flask's with ``--debug``), the metrics server and the gRPC server listen on that
  address only. The wrapper hard-codes ``0.0.0.0``: the address is replaced in the
  options it gives gunicorn, in the address it gives gRPC's ``add_insecure_port`` and
  in Flask's ``run``. Seldon's ``_reserve_grpc_port`` binds ``""`` to hold the gRPC
  port for its workers (``SO_REUSEPORT``) but never listens on it, so it accepts no
  connection and is left as it is.

Unset, the servers listen on every interface as Seldon's do. That is what a cluster
needs: the kubelet's probes (``httpGet`` goes to the pod's IP) and Prometheus reach the
model container over the pod's IP, not over loopback (only the Seldon executor, in the
same pod, calls ``localhost``), so the serving image leaves it unset.
:class:`closedloop.deploy.local.LocalSeldonServer` sets it (127.0.0.1 unless asked
otherwise), so a local server is reachable from this machine only.

The serving image's entrypoint and :class:`closedloop.deploy.local.LocalSeldonServer`
start the server this way.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BIND_HOST_ENV = "CLOSEDLOOP_BIND_HOST"


def _prepare_multiprocess_dir() -> str:
    directory = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="closedloop-metrics-")
    os.makedirs(directory, exist_ok=True)
    os.environ[MULTIPROC_ENV] = directory
    return directory


def serve_closedloop_metrics(directory: str) -> None:
    """Patch Seldon's metrics: serve ours from *directory*, skip empty updates."""
    from prometheus_client import CollectorRegistry, exposition, multiprocess
    from seldon_core import metrics as seldon_metrics

    def generate_metrics(self: seldon_metrics.SeldonMetrics) -> tuple[str, str]:
        registry = CollectorRegistry()
        registry.register(self)
        multiprocess.MultiProcessCollector(registry, path=directory)
        return (
            exposition.generate_latest(registry).decode("utf-8"),
            exposition.CONTENT_TYPE_LATEST,
        )

    seldon_metrics.SeldonMetrics.generate_metrics = generate_metrics  # type: ignore[method-assign]

    # The wrapper calls update() after every request, with an empty list when the model
    # has no custom metrics to hand over (ours has none): two round trips to its
    # multiprocessing manager that change nothing, about 0.3 ms of a 1 ms request.
    original_update = seldon_metrics.SeldonMetrics.update

    def update(self: seldon_metrics.SeldonMetrics, custom_metrics: list, method: str) -> None:
        if custom_metrics:
            original_update(self, custom_metrics, method)

    seldon_metrics.SeldonMetrics.update = update  # type: ignore[method-assign]


def _answer_grpc_errors_with_statuses() -> None:
    """Give the wrapper's gRPC server the closedloop.serving.grpc_status interceptor."""
    import grpc
    from seldon_core import wrapper

    from closedloop.serving.grpc_status import ErrorStatusInterceptor

    build = wrapper.get_grpc_server

    def get_grpc_server(*args: Any, **kwargs: Any) -> Any:
        # The wrapper builds its server with grpc.server(executor, options=...): add the
        # interceptor to that one call (a server takes no interceptor later).
        make_server = grpc.server

        def server(*s_args: Any, interceptors: Any = (), **s_kwargs: Any) -> Any:
            chain = [ErrorStatusInterceptor(), *(interceptors or ())]
            return make_server(*s_args, interceptors=chain, **s_kwargs)

        grpc.server = server
        try:
            return build(*args, **kwargs)
        finally:
            grpc.server = make_server

    wrapper.get_grpc_server = get_grpc_server


def _address(host: str, bind: str) -> str:
    """``host:port`` with the port of *bind* (``0.0.0.0:9000``); IPv6 in brackets."""
    port = bind.rsplit(":", 1)[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_to(host: str) -> None:
    """Make the wrapper's REST, metrics and gRPC servers listen on *host* only."""
    from seldon_core import microservice, wrapper

    def gunicorn_application(cls: Any) -> Any:
        def make(*args: Any, options: dict[str, Any], **kwargs: Any) -> Any:
            bound = {**options, "bind": _address(host, options["bind"])}
            return cls(*args, options=bound, **kwargs)

        return make

    def flask_app(factory: Any) -> Any:
        # --debug runs Flask's development server: app.run(host="0.0.0.0", ...).
        def make(*args: Any, **kwargs: Any) -> Any:
            app = factory(*args, **kwargs)
            run = app.run
            app.run = lambda *r_args, **r_kwargs: run(*r_args, **{**r_kwargs, "host": host})
            return app

        return make

    run_grpc_server = microservice._run_grpc_server

    def run_grpc_server_on_host(*args: Any) -> None:
        *rest, bind_address = args
        address = _address(host, bind_address)
        microservice.logger.info("gRPC server binds %s (%s)", address, BIND_HOST_ENV)
        run_grpc_server(*rest, address)

    microservice.UserModelApplication = gunicorn_application(microservice.UserModelApplication)
    microservice.StandaloneApplication = gunicorn_application(microservice.StandaloneApplication)
    microservice._run_grpc_server = run_grpc_server_on_host
    wrapper.get_rest_microservice = flask_app(wrapper.get_rest_microservice)
    wrapper.get_metrics_microservice = flask_app(wrapper.get_metrics_microservice)


def main(argv: list[str] | None = None) -> None:
    """Run Seldon's microservice with the changes in the module docstring."""
    directory = _prepare_multiprocess_dir()
    serve_closedloop_metrics(directory)
    _answer_grpc_errors_with_statuses()
    host = os.environ.get(BIND_HOST_ENV, "").strip()
    if host:
        _bind_to(host)
    from seldon_core import microservice

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    microservice.main()


if __name__ == "__main__":
    main()
