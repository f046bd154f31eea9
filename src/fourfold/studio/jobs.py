"""Background jobs for long work (generation, fine-tuning): progress, cancellation, one job per system.

A job runs ``fn(job) -> dict`` in a thread. ``fn`` reports with :meth:`Job.update` and calls
:meth:`Job.check` (raises :class:`Cancelled` once the user pressed *Cancel*) wherever it can stop.
:func:`progress_hook` turns every forward call of a module (one diffusion step, one decoded token) into
progress and a cancellation point, so pipelines we do not own stop within one step.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Busy", "Cancelled", "Job", "JobManager", "progress_hook"]


class Cancelled(Exception):
    """Raised inside a job when the user cancelled it."""


class Busy(RuntimeError):
    """A job of the same kind is already running."""


@dataclass
class Job:
    kind: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = "running"  # running | done | error | cancelled
    progress: float = 0.0  # 0..1
    message: str = "starting"
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    live: dict[str, Any] = field(default_factory=dict)  # streamed values (loss curve, memory...)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def update(self, progress: float | None = None, message: str | None = None) -> None:
        if progress is not None:
            self.progress = float(min(1.0, max(0.0, progress)))
        if message is not None:
            self.message = message

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled(f"{self.kind} job {self.id} was cancelled")

    def to_dict(self) -> dict[str, Any]:
        end = self.finished or time.time()
        return {
            "id": self.id, "kind": self.kind, "status": self.status, "progress": self.progress,
            "message": self.message, "result": self.result, "error": self.error, "live": self.live,
            "seconds": round(end - self.started, 2),
        }  # fmt: skip


class JobManager:
    """Starts jobs in threads; at most one running job per ``kind`` (the CPU is shared)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, fn: Callable[[Job], dict[str, Any]]) -> Job:
        with self._lock:
            running = [j for j in self._jobs.values() if j.kind == kind and j.status == "running"]
            if running:
                raise Busy(f"a {kind} job is already running ({running[0].message}); cancel it or wait")
            job = Job(kind)
            self._jobs[job.id] = job

        def run() -> None:
            try:
                job.result = fn(job) or {}
                job.status, job.progress, job.message = "done", 1.0, "done"
            except Cancelled:
                job.status, job.message = "cancelled", "cancelled"
            except Exception as err:  # shown in the page; the server keeps running
                job.status, job.error = "error", f"{type(err).__name__}: {err}"
                job.message = "failed"
                traceback.print_exc()
            finally:
                job.finished = time.time()

        threading.Thread(target=run, name=f"studio-{kind}-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.cancel_event.set()
        return job

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job leaves ``running`` (for tests and scripts)."""
        end = time.time() + timeout
        job = self._jobs[job_id]
        while job.status == "running" and time.time() < end:
            time.sleep(0.05)
        return job


@contextmanager
def progress_hook(module, job: Job, total_calls: int, lo: float = 0.0, hi: float = 1.0, label: str = "step"):
    """Each forward call of ``module`` advances ``job`` from ``lo`` to ``hi`` and checks for cancellation."""
    count = {"n": 0}

    def hook(_module, _inputs) -> None:
        job.check()
        count["n"] += 1
        n = min(count["n"], total_calls)
        job.update(lo + (hi - lo) * n / max(1, total_calls), f"{label} {n}/{total_calls}")

    handle = module.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()
