"""The one exception type for bad input, and what a one-line message needs.

Anything a user can get wrong (an unknown variant, a bad dimension, a broken graph file, an
output folder that cannot be written) raises :class:`BlockalgError` with a one-line message naming
the culprit. The CLI turns it into that line on stderr and exit code 2; library users catch it
like any ``ValueError``. Names that come from the user are written with :func:`quote`, so a name
holding a newline cannot split the line.
"""

import contextlib
import signal


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that clean-up code runs; ``signum`` is
    the signal (the CLI exits with 128 + signum)."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def sigterm_raises():
    """Inside the block SIGTERM raises :class:`Terminated`, as Ctrl-C raises KeyboardInterrupt,
    so that ``finally`` blocks clean up (by default SIGTERM ends the process on the spot). A
    handler someone else installed, or one outside the main thread, is left alone."""
    try:
        installed = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        if installed:
            signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals are handled there
        installed = False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def quote(value, limit: int = 200) -> str:
    """``value`` written like ``repr`` of a string: quoted, with newlines and other control
    characters escaped, and cut to ``limit`` characters.

    >>> quote("ln_1"), quote("bad\\nname"), quote(7)
    ("'ln_1'", "'bad\\\\nname'", '7')
    >>> quote("x" * 300)[-12:]
    'xx… (300 ch)'
    """
    text = repr(value) if isinstance(value, str) else escape_line(repr(value))
    if len(text) > limit:
        size = len(value) if isinstance(value, str) else len(text)
        text = f"{text[:limit]}… ({size} ch)"
    return text


def escape_line(text: str) -> str:
    """``text`` with every line break and other control character escaped (``\\n``, ``\\x1b``),
    so that it prints as one line.

    >>> escape_line("a\\nb\\tc")
    'a\\\\nb\\\\tc'
    """
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))
