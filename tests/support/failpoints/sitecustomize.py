"""Test-only failpoints for crash tests: put this directory on PYTHONPATH and set
`CORRAL_KILL_AT=<before|after>:<fsync|replace>:<n>`; the process SIGKILLs itself just before or
just after its n-th call of `os.fsync` / `os.replace` (the store's temp-write, fsync and rename
steps), so a test can crash `stack serve` at a named point without touching the server's code."""

import os
import signal

_spec = os.environ.get("CORRAL_KILL_AT", "")
if _spec:
    _when, _name, _nth = _spec.split(":")
    _original = getattr(os, _name)
    _calls = [0]

    def _failpoint(*args, **kwargs):
        _calls[0] += 1
        hit = _calls[0] == int(_nth)
        if hit and _when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = _original(*args, **kwargs)
        if hit and _when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(os, _name, _failpoint)
