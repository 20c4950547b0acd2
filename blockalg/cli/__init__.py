"""The ``blockalg`` command line: click commands over the library, one error handler."""

from .commands import main

__all__ = ["main"]
