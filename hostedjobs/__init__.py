"""hostedjobs: hosted background services for Starlette and FastAPI apps, on arq and Redis."""

from .concurrency import ConcurrencyLimit
from .context import JobContext
from .exceptions import HostedJobsError
from .host import JobHost
from .outcomes import JobKind, JobStatus, Outcome
from .rates import Cooldown, Debounce, RateLimit
from .results import JobResult
from .retries import RetryPolicy
from .scheduler import JobId, JobInfo, Scheduler
from .scope import Inject, Services
from .serialization import job_type
from .tasks import Task

__all__ = [
    "ConcurrencyLimit",
    "Cooldown",
    "Debounce",
    "HostedJobsError",
    "Inject",
    "JobContext",
    "JobHost",
    "JobId",
    "JobInfo",
    "JobKind",
    "JobResult",
    "JobStatus",
    "Outcome",
    "RateLimit",
    "RetryPolicy",
    "Scheduler",
    "Services",
    "Task",
    "job_type",
]

__version__ = "0.1.0"
