"""The runner: reads every input first (pure), then runs the playbook per detection.

Bad documents are reported by location and field, but never stop the good
detections in the same batch from being contained. Exit codes: 0 done, 1 a
failure while acting (the case stays recorded; run again to resume), 2 bad input.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from playbooks.config import Config
from playbooks.detection import Detection, IntakeError, Skipped, detections_from_document, read_documents
from playbooks.layer_exposure import Outcome, Services, respond

EXIT_OK, EXIT_ACTION_FAILED, EXIT_BAD_INPUT = 0, 1, 2
RETRY_FIRST_DELAY_SECONDS = 30.0
MAX_INPUT_BYTES = 64 * 1024 * 1024


@dataclass
class Intake:
    items: list[Detection | Skipped] = field(default_factory=list)
    errors: list[IntakeError] = field(default_factory=list)


@dataclass
class RunReport:
    outcomes: list[Outcome] = field(default_factory=list)
    intake_errors: list[IntakeError] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(o.errors for o in self.outcomes):
            return EXIT_ACTION_FAILED
        if self.intake_errors:
            return EXIT_BAD_INPUT
        return EXIT_OK


def read_input(paths: Iterable[str], stdin: BinaryIO | None = None) -> Intake:
    intake = Intake()
    for path in paths:
        try:
            detections_in(_read_bytes(path, stdin), "<stdin>" if path == "-" else path, intake)
        except IntakeError as exc:
            intake.errors.append(exc)
    return intake


def detections_in(data: bytes, location: str, intake: Intake | None = None) -> Intake:
    """Detections from one input (a file, a message body); a bad document never hides the good ones."""
    intake = intake if intake is not None else Intake()
    try:
        documents = read_documents(data, location)
        for document in documents:
            try:
                intake.items.extend(detections_from_document(document))
            except IntakeError as exc:
                intake.errors.append(exc)
    except IntakeError as exc:
        intake.errors.append(exc)
    return intake


def _read_bytes(path: str, stdin: BinaryIO | None) -> bytes:
    if path == "-":
        data = (stdin or sys.stdin.buffer).read(MAX_INPUT_BYTES + 1)
    else:
        try:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        except FileNotFoundError:
            raise IntakeError(path, "no such file") from None
        except IsADirectoryError:
            raise IntakeError(path, "is a directory, not a file") from None
        except OSError as exc:
            raise IntakeError(path, f"cannot be read: {exc.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise IntakeError("<stdin>" if path == "-" else path, f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    return data


def queue_for_retry(services: Services, detection: Detection, case_id: str) -> None:
    """The outbox: what could not be delivered now is delivered by `serve` or `layerguard retry`."""
    if not services.store.has_pending("respond", case_id):
        job_id = services.store.enqueue("respond", case_id, {"detection": asdict(detection)})
        services.store.retry_job(job_id, "queued after a failed run", RETRY_FIRST_DELAY_SECONDS)


def run(intake: Intake, config: Config, services: Services, dry_run: bool = False) -> RunReport:
    report = RunReport(intake_errors=list(intake.errors))
    for item in intake.items:
        if isinstance(item, Skipped):
            report.outcomes.append(Outcome(event_id=item.event_id, case_id="", grant="", severity="",
                                           decision="skipped", reason=item.reason, location=item.location,
                                           dry_run=dry_run))
            continue
        try:
            outcome = respond(item, config, services, dry_run=dry_run)
            report.outcomes.append(outcome)
            if outcome.errors and outcome.case_id and services.store is not None:
                queue_for_retry(services, item, outcome.case_id)
        except Exception as exc:  # one failing detection must not stop the others
            report.outcomes.append(Outcome(
                event_id=item.event_id, case_id="", grant="", severity="", decision="failed",
                reason="the playbook failed", layer_version_arn=item.layer_version_arn,
                principal=item.principal, errors=[f"{type(exc).__name__}: {exc}"],
                dry_run=dry_run, location=item.location))
    return report
