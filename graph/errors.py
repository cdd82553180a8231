"""The toolkit's user-facing error base.

Every error meant for the person at the keyboard (bad input, a refused output directory, a
locked run, a corrupted store) derives from :class:`ToolkitError`. The ``pinclip`` CLI prints
exactly these as one line and exits with status 2; anything else is a bug and keeps its
traceback. The classes also derive from ``ValueError`` where they always did, so Python callers
that catch ``ValueError`` keep working.
"""
from __future__ import annotations


class ToolkitError(Exception):
    """An error about the user's input or files, printed without a traceback by the CLI."""


class InputError(ToolkitError, ValueError):
    """An argument or value given by the user is invalid (the message names it)."""


class MissingInputError(ToolkitError, FileNotFoundError):
    """A path the user named does not exist, or is not the kind of directory expected there."""


def user_message(exc: BaseException) -> str:
    """The message of a user-facing error, without the DataLoader worker's wrapping.

    torch re-raises an exception from a DataLoader worker as the same type whose message is
    "Caught X in DataLoader worker process N.\nOriginal Traceback ...: <message>"; the user
    wants only ``<message>``. Other exceptions give ``str(exc)``.
    """
    text = str(exc)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    cls = type(exc)
    # traceback's own spelling of the exception's type (module-qualified unless builtin or __main__)
    marker = (f"{cls.__qualname__}: " if cls.__module__ in ("builtins", "__main__")
              else f"{cls.__module__}.{cls.__qualname__}: ")
    at = text.rfind(marker)
    return text[at + len(marker):].rstrip("\n") if at >= 0 else text
