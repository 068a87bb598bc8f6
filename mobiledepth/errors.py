"""Errors a user can cause and fix: the CLI prints them as one line, never a traceback."""


class MobileDepthError(Exception):
    """A failure with a one-line message that names the problem and the fix.

    Every problem exits 2; exit 1 is reserved for ``mobiledepth check``'s "regression" verdict."""

    exit_code = 2


class UserError(MobileDepthError):
    """Bad input: an unknown name, a bad path, an impossible combination of options."""

    exit_code = 2


class StageFailed(MobileDepthError):
    """A stage ran but its result cannot be trusted (e.g. a conversion broke parity)."""

    exit_code = 2
