"""Schemathesis hooks for MeshWG (loaded through SCHEMATHESIS_HOOKS by scripts/fuzz-api.sh).

One extra check: a 4xx answer changed nothing. The state is everything a request could change,
printed by the command in MESHWG_FUZZ_SNAPSHOT: table contents (fingerprints) and the kernel
objects of the controller under test (namespaces, rules, sets, addresses, peers). The snapshot
taken after one response is the one the next request is compared against, unless something may
have changed in between (a response that was not a 4xx), in which case a fresh one is taken.
Requests are sequential (--workers 1), so nothing else changes the state meanwhile.
"""

import difflib
import os
import subprocess

import schemathesis

_SNAPSHOT = os.environ["MESHWG_FUZZ_SNAPSHOT"]
_state = {"before": None}


def _snapshot() -> str:
    return subprocess.run([_SNAPSHOT], capture_output=True, text=True, check=True).stdout


@schemathesis.hook
def before_call(context, case, kwargs):
    if _state["before"] is None:
        _state["before"] = _snapshot()


@schemathesis.check
def no_state_change_on_client_error(ctx, response, case):
    before, _state["before"] = _state["before"], None
    if not 400 <= response.status_code < 500:
        return None
    after = _snapshot()
    _state["before"] = after
    if before is not None and after != before:
        diff = "\n".join(
            difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=1)
        )
        raise AssertionError(f"{response.status_code} answer, but the state changed:\n{diff[:3000]}")
    return None
