"""The drift-detector sidecar: Seldon request-logger CloudEvents in, drift CloudEvents out.

Runs beside every model server (``closedloop sidecar serve``). It checks each event as
the model server checks the request it logs (:mod:`.events`, :mod:`.intake`: the
server's message checks and the version's :class:`~closedloop.ml.rowplan.RowPlan`), so
a row the server refuses never enters a window; dedupes on ``(source, id)`` and fills
windows (:mod:`.window`); writes every event it takes to an fsync'd journal before
answering (:mod:`.journal`, group commit); runs the detector fitted with the served
version (:mod:`.loader`), publishes Prometheus metrics (:mod:`.metrics`), sends a drift
CloudEvent (:mod:`.alarm`) only when a window drifts (:mod:`.emitter`), archives
labelled feedback rows (:mod:`.archive`) and resumes from its checkpoint and journal
after any stop, a hard kill included (:mod:`.state`). :mod:`.monitor` ties these
together; :mod:`.app` puts HTTP in front (:mod:`.eventserver` for the event port).

Nothing is imported here, so the trigger can read :mod:`.alarm` without loading pandas
or alibi-detect.
"""
