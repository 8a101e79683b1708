"""The package's exception type: every user-facing error names the offending file, field or layer."""


class FrankenscopeError(Exception):
    """A problem with the user's input (file, field, layer, architecture) described in plain words."""
