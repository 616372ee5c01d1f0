"""The one exception type the CLI turns into a single clear line and exit code 2."""


class UpoError(Exception):
    """A user-facing error: bad input file, bad config, incompatible checkpoint.

    The message must be one line that names what is wrong (file, line, field) and why.
    """
