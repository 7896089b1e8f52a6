"""``seldon-core-microservice`` with the model server's own metrics on its metrics port.

Run as ``python -m closedloop.serving.microservice <MODEL_NAME> [wrapper options]``: the
same command line as Seldon's ``seldon-core-microservice`` (see
``seldon_core/microservice.py`` in seldon-core 1.19), which it runs after two changes:

* ``PROMETHEUS_MULTIPROC_DIR`` is set (a fresh private directory unless given) before
  ``prometheus_client`` is imported, so the metrics of :mod:`closedloop.serving.metrics`
  that every gunicorn worker and the gRPC process record land in files there;
* the wrapper's metrics endpoint (``SeldonMetrics.generate_metrics``, which serves only
  the wrapper's own metrics) also serves those, merged across processes by
  ``prometheus_client.multiprocess.MultiProcessCollector``.

The serving image's entrypoint and :class:`closedloop.deploy.local.LocalSeldonServer`
start the server this way.
"""

from __future__ import annotations

import os
import sys
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _prepare_multiprocess_dir() -> str:
    directory = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="closedloop-metrics-")
    os.makedirs(directory, exist_ok=True)
    os.environ[MULTIPROC_ENV] = directory
    return directory


def _serve_closedloop_metrics(directory: str) -> None:
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


def main(argv: list[str] | None = None) -> None:
    """Run Seldon's microservice with the changes in the module docstring."""
    directory = _prepare_multiprocess_dir()
    _serve_closedloop_metrics(directory)
    from seldon_core import microservice

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    microservice.main()


if __name__ == "__main__":
    main()
