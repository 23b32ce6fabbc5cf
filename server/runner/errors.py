"""Errors raised by a runner handle (server/runner/client.py).

Every error carries a message that can be shown to an API client as is. `InvalidRequest` and
`InputTooLong` are the client's mistake (answer 400); the others are the server's (500/503).
"""

from __future__ import annotations


class RunnerError(Exception):
    """Base class of everything a runner raises."""


class LoadError(RunnerError):
    """The model could not be loaded (bad file, context too large, adapter that does not fit)."""


class LoadTimeout(LoadError):
    """The runner did not finish loading within the load timeout; it was killed."""


class RunnerCrashed(RunnerError):
    """The runner process died (e.g. a segfault in llama.cpp); its in-flight requests fail with this."""


class RunnerClosed(RunnerError):
    """The runner was closed (unloaded) while the request was pending or streaming."""


class InvalidRequest(RunnerError):
    """A request the runner refuses before scheduling it: bad grammar, bad JSON schema, bad option."""


class InputTooLong(InvalidRequest):
    """An embedding input longer than the context, with truncate=False."""


# Names used on the wire between the runner process and its handle.
BY_NAME: dict[str, type[RunnerError]] = {
    cls.__name__: cls
    for cls in (RunnerError, LoadError, LoadTimeout, RunnerCrashed, RunnerClosed, InvalidRequest, InputTooLong)
}
