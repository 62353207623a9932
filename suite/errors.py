"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class UserError(Exception):
    """A mistake in the user's input or environment (a file, a field, a value), not a bug.

    The message must stand alone on one line and name the file, field or value at fault.
    """
