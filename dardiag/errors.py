"""One error type for everything a user can get wrong.

The CLI prints ``DardiagError`` as a single line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class DardiagError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do."""
