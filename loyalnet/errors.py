"""The one exception type the command line shows to people."""


class LoyalnetError(Exception):
    """A failure the user can act on.

    The message is one sentence that says what went wrong and what to do about it; the CLI
    prints it as a single line and exits non-zero, without a traceback.
    """
