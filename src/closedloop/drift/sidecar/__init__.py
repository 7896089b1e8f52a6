"""The drift-detector sidecar: Seldon request-logger CloudEvents in, drift CloudEvents out.

Runs beside every model server (``closedloop sidecar serve``). It checks each event
(:mod:`.events`), dedupes on ``(source, id)`` and fills windows (:mod:`.window`), runs
the detector fitted with the served version (:mod:`.loader`), publishes Prometheus
metrics (:mod:`.metrics`), sends a drift CloudEvent (:mod:`.alarm`) only when a window
drifts (:mod:`.emitter`), archives labelled feedback rows (:mod:`.archive`) and keeps
its state across restarts (:mod:`.state`). :mod:`.monitor` ties these together;
:mod:`.app` puts HTTP in front.

Nothing is imported here, so the trigger can read :mod:`.alarm` without loading pandas
or alibi-detect.
"""
