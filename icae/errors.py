"""The one exception family that means "the user asked for something that cannot be done as asked".

Every entry point turns a :class:`UserError` into its message and exit code 2, without a traceback; any other
exception is a programming error and keeps its traceback.
"""


class UserError(ValueError):
    """A bad config, data file, checkpoint or request; the message names the problem and what to change."""
