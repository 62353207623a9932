"""The one exception type the CLI turns into a one-line message instead of a traceback, and its form for one
bad field of a config dataclass."""


class UserError(Exception):
    """A mistake in the user's input or environment (a file, a field, a value), not a bug.

    The message must stand alone on one line and name the file, field or value at fault.
    """


class FieldError(UserError):
    """A bad value of one field (key: the field's name; None for a rule across fields). Standing alone it names
    the command-line option (label, by default --key); a config file's reader names the file, table and key
    instead (suite.config.read_table), with the same ``problem`` after it."""

    def __init__(self, key: str | None, problem: str, label: str | None = None):
        self.key, self.problem = key, problem
        if label is None and key is not None:
            label = "--" + key.replace("_", "-")
        super().__init__(f"{label} {problem}" if label else problem)

    def at(self, where: str) -> str:
        """The message with the file and table in front: "FILE [table]: key 'epochs' must be ..."."""
        return f"{where}: key {self.key!r} {self.problem}" if self.key else f"{where}: {self.problem}"
