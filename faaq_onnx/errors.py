"""One exception type for everything a user can get wrong.

The CLI prints ``FaaqError`` as a single line and exits non-zero; anything else
is a bug in faaq and keeps its traceback.
"""


class FaaqError(Exception):
    """A problem with the user's input (model, data, budget, options)."""

    exit_code = 2

    def __str__(self) -> str:  # one line, always
        return " ".join(str(self.args[0] if self.args else "").split())
