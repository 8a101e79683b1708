"""The package's exception types: every user-facing error names the offending file, field or layer.

Exit codes of the command line: a `FrankenscopeError` (a problem with the user's input or usage) exits
with 2; a `FrankenscopeRuntimeError` (the run itself failed: a locked cache, an endpoint that failed on
every request, a full disk) exits with 1.
"""


class FrankenscopeError(Exception):
    """A problem with the user's input (file, field, layer, architecture) described in plain words."""

    exit_code = 2


class FrankenscopeRuntimeError(FrankenscopeError):
    """The run failed for a reason outside the user's input (exit code 1)."""

    exit_code = 1
