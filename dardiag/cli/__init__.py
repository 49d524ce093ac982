"""The ``dardiag`` command: thin entry points that validate, call one library function, report.

Each command lives in its own module ``cmd_<name>.py`` and registers itself with ``@command()``.
Every ``DardiagError`` is printed as one line on stderr with exit status 2; no traceback reaches the
user for bad input.
"""

from dardiag.cli.app import app, main

__all__ = ["app", "main"]
