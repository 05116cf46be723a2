"""The job worker: runs what was recorded before an ack (or by the webhook, or by
expiry), with retries that never drop a job. The one place that decides a job's
retry and back-off; each external call inside already has its own retry policy.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from integrations.state import Job
from playbooks.approvals import apply_decision, notify_user, remind_or_escalate
from playbooks.config import Config
from playbooks.detection import detection_from_dict
from playbooks.layer_exposure import Services, respond

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 300.0


def run_respond_job(job: Job, config: Config, services: Services) -> None:
    outcome = respond(detection_from_dict(job.payload["detection"]), config, services)
    if outcome.errors:
        raise RuntimeError("; ".join(outcome.errors))


HANDLERS: dict[str, Callable[[Job, Config, Services], None]] = {
    "respond": run_respond_job,
    "apply_decision": apply_decision,
    "notify_refusal": notify_user,
    "notify_already_decided": notify_user,
    "remind": remind_or_escalate,
    "escalate": remind_or_escalate,
}


class Worker:
    def __init__(self, config: Config, services: Services, busy: Callable[[], bool] = lambda: False):
        self.config = config
        self.services = services
        self.busy = busy  # while requests wait for an answer, jobs wait: acks come first
        self._ready = threading.Condition()
        self.stopping = threading.Event()

    def notify(self, jobs: int = 1) -> None:
        """New work: wake one idle worker per job, not all of them."""
        with self._ready:
            self._ready.notify(jobs)

    def stop(self) -> None:
        self.stopping.set()
        with self._ready:
            self._ready.notify_all()

    def run_once(self, job_id: int | None = None) -> bool:
        """Run one ready job (or job ``job_id``); False when there is none."""
        store = self.services.store
        job = store.claim_job(job_id=job_id)
        if job is None:
            return False
        try:
            HANDLERS[job.kind](job, self.config, self.services)
        except Exception as exc:
            delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(job.attempts, 10))
            log.warning("job %s (%s, case %s) failed, attempt %s, retry in %.0fs: %s",
                        job.job_id, job.kind, job.case_id, job.attempts, delay, exc)
            store.retry_job(job.job_id, f"{type(exc).__name__}: {exc}", delay)
            store.update_case(job.case_id, note=f"{job.kind} failed (attempt {job.attempts}), will retry: {exc}")
            return True
        store.finish_job(job.job_id)
        return True

    def drain(self, time_is_up: Callable[[], bool] = lambda: False) -> int:
        """Run every ready job (`layerguard expire`, a Lambda invocation, tests); returns how many ran.

        ``time_is_up`` is asked before each job: a job left unclaimed stays ready for the next run."""
        count = 0
        while not time_is_up() and self.run_once():
            count += 1
        return count

    def retry_all(self) -> int:
        """Run every pending job once now, whatever its back-off (`layerguard retry`)."""
        ids = [job.job_id for job, _ in self.services.store.pending_jobs()]
        return sum(1 for job_id in ids if self.run_once(job_id))

    def run_forever(self, poll_seconds: float = 1.0) -> None:
        while not self.stopping.is_set():
            if self.busy():
                self.stopping.wait(0.01)
                continue
            if not self.run_once():
                with self._ready:
                    self._ready.wait(poll_seconds)
