"""The one exception type for bad input.

Anything a user can get wrong (an unknown variant, a bad dimension, a broken graph file) raises
:class:`BlockalgError` with a one-line message naming the culprit. The CLI turns it into that line on
stderr and exit code 2; library users catch it like any ``ValueError``.
"""


class BlockalgError(ValueError):
    """Bad input: the message is one line and names what is wrong."""


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``: an exception raised by the user's own code (a
    module file, a block's constructor), told as part of a one-line error.

    >>> one_line(ValueError("bad width\\nmore detail"))
    'ValueError: bad width'
    """
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
