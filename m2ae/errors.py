"""The one exception type that means "the user asked for something we can't do"."""


class UserError(Exception):
    """A mistake in the user's input: the CLI prints it as one line and exits 2.

    Raise it with a message that names the file or option at fault and says what
    to do instead; never for a bug in m2ae itself (those keep their traceback).
    """
