"""The one exception type the CLIs turn into a one-line message and a non-zero exit."""


class StyleflowError(Exception):
    """A problem the user can fix (bad input, missing weights, unwritable output).

    The message is shown as is, on one line, without a traceback.
    """
