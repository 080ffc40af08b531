"""Every error hostedjobs raises, in one place.

Each class also subclasses the builtin it semantically is, so ``except ValueError`` and
friends keep working, and each message says how to fix the problem::

    HostedJobsError
    ├── ConfigurationError (ValueError)         bad registration or option, found at set-up
    │   └── RedisConfigurationError             a Redis server that would lose or refuse jobs
    ├── PayloadError (TypeError)                a job payload that cannot be written as JSON
    ├── PayloadDecodeError (ValueError)         a stored payload that does not fit its job type
    ├── JobAlreadyExistsError (ValueError)      an explicit job id that is already taken
    ├── UnknownJobError (LookupError)           a hosted job name nobody registered
    ├── UnknownJobTypeError (LookupError)       a job type or version with no handler here
    ├── DependencyResolutionError (LookupError) a service a run asked for and nobody provides
    ├── HostNotRunningError (RuntimeError)      the host was used outside ``host.run()``
    ├── StartupActionError (RuntimeError)       a startup action failed (blocking mode)
    ├── JobFailedError (RuntimeError)           a run that returned ``JobResult.failed``
    ├── LockTimeoutError (TimeoutError)         a named lock not acquired within its timeout
    ├── LockLostError (RuntimeError)            a named lock that lapsed while held
    ├── RedisUnavailableError (ConnectionError) Redis could not be reached or did not answer
    │   └── NotReplicatedError                  a write no replica confirmed in time
    └── RedisServerNotFoundError (FileNotFoundError)
                                                no server binary (or extra) for the embedded
                                                default
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DependencyResolutionError",
    "HostNotRunningError",
    "HostedJobsError",
    "JobAlreadyExistsError",
    "JobFailedError",
    "LockLostError",
    "LockTimeoutError",
    "NotReplicatedError",
    "PayloadDecodeError",
    "PayloadError",
    "RedisConfigurationError",
    "RedisServerNotFoundError",
    "RedisUnavailableError",
    "StartupActionError",
    "UnknownJobError",
    "UnknownJobTypeError",
]


class HostedJobsError(Exception):
    """Base class of every error raised by hostedjobs."""


class ConfigurationError(HostedJobsError, ValueError):
    """A registration or option is invalid; raised at set-up, before anything runs."""


class RedisConfigurationError(ConfigurationError):
    """The Redis server is set up so that it would lose jobs silently or refuse them half-way
    (an eviction policy, a replica, cluster mode, too old a version, a missing ACL
    permission); raised at start-up, listing each problem and its fix."""


class PayloadError(HostedJobsError, TypeError):
    """A job payload holds a value that cannot be written as JSON (raised at enqueue)."""


class PayloadDecodeError(HostedJobsError, ValueError):
    """A stored payload is not JSON, or does not fit the fields of its job type."""


class JobAlreadyExistsError(HostedJobsError, ValueError):
    """An explicit job id is already used by a queued, running or finished job."""


class UnknownJobError(HostedJobsError, LookupError):
    """No hosted job (or job type) is registered under the given name."""


class UnknownJobTypeError(HostedJobsError, LookupError):
    """A queued job names a type or version that this process has no handler for."""


class DependencyResolutionError(HostedJobsError, LookupError):
    """A run asked for a service that is not registered in its `Services`."""


class HostNotRunningError(HostedJobsError, RuntimeError):
    """The host was used before ``host.run()`` (or the app's lifespan) started it."""


class StartupActionError(HostedJobsError, RuntimeError):
    """A startup action failed, so the host (in blocking startup mode) did not start."""


class JobFailedError(HostedJobsError, RuntimeError):
    """A run reported failure by returning ``JobResult.failed(message)``."""


class LockTimeoutError(HostedJobsError, TimeoutError):
    """A named lock (``host.lock``) was not acquired within its ``timeout``: another holder
    kept it. Foundatio's ``LockAcquisitionTimeoutException``; use ``acquire(blocking=False)``
    to try without waiting."""


class LockLostError(HostedJobsError, RuntimeError):
    """A named lock lapsed while its holder still ran (its renewals failed for a whole TTL,
    or the process was paused that long), so another may have taken it: what the holder
    wrote meanwhile was not exclusive. Raised on leaving the ``async with`` (redis-py's
    ``LockNotOwnedError``); pass the lock's fencing token to what you write to guard it."""


class RedisUnavailableError(HostedJobsError, ConnectionError):
    """A Redis call failed: no connection (refused, unknown host, TLS, authentication), no
    answer within the timeout, or an error reply (out of memory, read-only, forbidden by
    the ACL). The message names the server and the cause, never the password."""


class NotReplicatedError(RedisUnavailableError):
    """A write reached the primary, but fewer replicas than ``durability="replicated"``
    requires confirmed it in time (Redis's WAIT): a failover now may lose it. Retrying is
    safe for an enqueue with an explicit id (a duplicate is refused)."""


class RedisServerNotFoundError(HostedJobsError, FileNotFoundError):
    """The embedded default cannot run: no server binary was found, or the ``embedded`` extra
    is not installed."""
