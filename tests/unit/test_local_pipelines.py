"""The log tap behind local runs: task events and the failing task's own error line."""

from __future__ import annotations

from pathlib import Path

from closedloop.local.pipelines import TaskEvent, _LogTap

LOG = """\x1b[36m12:00:00.000 - INFO - Executing task \x1b[96m'ingest-data'\x1b[0m
12:00:01.000 - INFO - Task 'ingest-data' finished with status \x1b[92mSUCCESS\x1b[0m
12:00:01.100 - INFO - Executing task 'validate-data'
    Traceback (most recent call last):
      File "x.py", line 1, in <module>
    ValueError: data validation failed for s3://b/raw.csv: column 'amount' is 40% missing
12:00:02.000 - ERROR - Task 'validate-data' finished with status FAILURE
    RuntimeError: Pipeline 'closedloop-training' finished with status FAILURE
12:00:02.100 - INFO - Skipping conditional task condition-2 (condition evaluated to False)
"""


def test_events_and_the_root_cause_are_extracted(tmp_path: Path) -> None:
    events: list[TaskEvent] = []
    tap = _LogTap(tmp_path / "run.log", events.append)
    # Written in odd chunks, as a stream would deliver it.
    for start in range(0, len(LOG), 7):
        tap.write(LOG[start : start + 7])
    tap.close()
    assert [(e.task, e.status) for e in events] == [
        ("ingest-data", "started"),
        ("ingest-data", "succeeded"),
        ("validate-data", "started"),
        ("validate-data", "failed"),
        ("condition-2", "skipped"),
    ]
    assert tap.failed_task == "validate-data"
    # The task's own error wins over the orchestrator's generic one after it.
    assert (
        tap.last_error
        == "ValueError: data validation failed for s3://b/raw.csv: column 'amount' is 40% missing"
    )
    assert (tmp_path / "run.log").read_text() == LOG


def test_error_lines_name_no_class_paths(tmp_path: Path) -> None:
    tap = _LogTap(tmp_path / "run.log", lambda event: None)
    tap.write(
        "closedloop.storage.errors.StorageUnavailableError: S3 at http://127.0.0.1:1 is not "
        "answering\n"
    )
    tap.close()
    assert tap.last_error == "S3 at http://127.0.0.1:1 is not answering"
    other = _LogTap(tmp_path / "other.log", lambda event: None)
    other.write("botocore.exceptions.EndpointConnectionError: Could not connect\n")
    other.close()
    assert other.last_error == "EndpointConnectionError: Could not connect"


def test_a_local_run_deploys_locally_unless_told_otherwise() -> None:
    from closedloop.local.pipelines import with_local_defaults

    declared = {"data_uri", "deploy_backend"}
    assert with_local_defaults(declared, {"data_uri": "x"}) == {
        "data_uri": "x",
        "deploy_backend": "local",
    }
    assert with_local_defaults(declared, {"deploy_backend": "none"}) == {"deploy_backend": "none"}
    # A pipeline without the parameter gets nothing it did not declare.
    assert with_local_defaults({"data_uri"}, {"data_uri": "x"}) == {"data_uri": "x"}


def test_a_retried_task_is_not_blamed_for_a_later_failure(tmp_path: Path) -> None:
    # kfp.local runs a task again after a failure when it has retries (set_retry).
    log = """Executing task 'ingest-data'
closedloop.storage.errors.StorageUnavailableError: cannot reach S3 at http://127.0.0.1:1
Task 'ingest-data' finished with status FAILURE
Executing task 'ingest-data'
Task 'ingest-data' finished with status SUCCESS
Executing task 'validate-data'
    ValueError: logged by a check that went on
Task 'validate-data' finished with status SUCCESS
Executing task 'gate-model'
closedloop.storage.errors.StorageUnavailableError: cannot reach S3 at http://127.0.0.1:2
Task 'gate-model' finished with status FAILURE
Executing task 'gate-model'
closedloop.registry.registry.RegistryError: fraud has no version 'v9'
Task 'gate-model' finished with status FAILURE
"""
    events: list[TaskEvent] = []
    tap = _LogTap(tmp_path / "run.log", events.append)
    tap.write(log)
    tap.close()
    assert tap.failed_task == "gate-model"
    # The last attempt's own error, with no class path.
    assert tap.last_error == "fraud has no version 'v9'"
    statuses = [(e.task, e.status) for e in events]
    assert statuses[:3] == [
        ("ingest-data", "started"),
        ("ingest-data", "failed"),
        ("ingest-data", "started"),
    ]
