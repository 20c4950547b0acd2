"""The one exception type for bad input.

Anything a user can get wrong (an unknown variant, a bad dimension, a broken graph file) raises
:class:`BlockalgError` with a one-line message naming the culprit. The CLI turns it into that line on
stderr and exit code 2; library users catch it like any ``ValueError``.
"""


class BlockalgError(ValueError):
    """Bad input: the message is one line and names what is wrong."""
