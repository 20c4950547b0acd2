"""Files in and out: atomic writes (an interrupted run never leaves a half-written file) and JSON
reads that refuse what they cannot handle (too big, too deep, not UTF-8, huge integers, NaN)
with one line naming the file. Every ``OSError`` (no such folder, permission, read-only file
system, disk full, a name too long) becomes a :class:`BlockalgError` naming the path.
"""

import json
import os
import tempfile
from pathlib import Path

from .errors import BlockalgError, escape_line, quote
from .limits import MAX_FILE_BYTES, MAX_JSON_DEPTH, MAX_JSON_INT_DIGITS


def os_error(path, e: OSError, doing: str = "cannot write") -> BlockalgError:
    """A one-line error for ``e`` raised while reading or writing ``path``.

    >>> os_error("out/x.png", PermissionError(13, "Permission denied"))
    BlockalgError("'out/x.png': cannot write (Permission denied)")
    """
    return BlockalgError(f"{quote(str(path))}: {doing} ({e.strerror or type(e).__name__})")


def make_folder(folder, for_path=None) -> None:
    """Create ``folder`` and its parents; a file in the way is named in a one-line error."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise BlockalgError(f"{quote(str(for_path or folder))}: cannot write ({quote(str(blocker))} "
                            f"is a file, not a folder)") from None


def check_writable(path, prefix: str | None = None) -> Path:
    """Fail now, with one line, if ``path`` cannot be written later: a file in the way of its
    folder, a name too long, no permission, a read-only file system. Creates the folder (and a
    temporary entry named ``prefix``..., removed at once). Returns ``path`` as a Path."""
    path = Path(path)
    try:
        limit = os.pathconf(path.parent if path.parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(path.name)) > limit:
        raise BlockalgError(f"{quote(str(path))}: cannot write (File name too long)")
    make_folder(path.parent, path)
    try:
        os.rmdir(tempfile.mkdtemp(dir=path.parent, prefix=prefix or f".{path.name[:64]}.probe-"))
    except OSError as e:
        raise os_error(path, e) from None
    return path


def write_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
    >>> write_atomic(p, "hello\\n"); p.read_text()
    'hello\\n'
    """
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path, data: bytes) -> None:
    """Like :func:`write_atomic`, for bytes. The file gets the mode a plain ``open`` would give
    it (0666 less the umask), not the temporary file's private 0600."""
    path = Path(path)
    tmp = None
    make_folder(path.parent, path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(path, e) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            Path(tmp).unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


class _Refused(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_JSON_INT_DIGITS})")
    return int(text)


def _real(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"the number {text[:30]} does not fit a float")
    return value


def _constant(text: str):
    raise _Refused(f"{text} is not a number JSON allows")


def json_depth(value) -> int:
    """The deepest nesting of arrays and objects in a parsed JSON value (without recursion).

    >>> json_depth({"a": [1, {"b": "]]"}]})
    3
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def read_json(path):
    """The JSON value in the file at ``path``, within the limits of :mod:`blockalg.limits`
    (size, nesting, integer digits; no NaN or Infinity); a UTF-8 byte-order mark is allowed."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise os_error(path, e, "cannot read") from None
    if len(data) > MAX_FILE_BYTES:
        raise BlockalgError(f"{quote(str(path))}: larger than {MAX_FILE_BYTES:,} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BlockalgError(f"{quote(str(path))}: not UTF-8 text (byte {e.start})") from None
    deep = BlockalgError(f"{quote(str(path))}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_real, parse_constant=_constant)
    except _Refused as e:
        raise BlockalgError(f"{quote(str(path))}: {e}") from None
    except RecursionError:
        raise deep from None
    except ValueError as e:  # json.JSONDecodeError, or a str-to-int limit
        raise BlockalgError(f"{quote(str(path))}: not valid JSON ({escape_line(str(e))[:200]})") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise deep
    return value
