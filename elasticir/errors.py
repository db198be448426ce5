"""One exception type for every user-facing failure.

The CLI catches `ElasticIRError` and prints its message without a traceback, so every message must say what
went wrong, where (file and line when there is one) and how to fix it.
"""


class ElasticIRError(Exception):
    """A problem with the user's input, data or environment, explained in the message."""


class DataNotFoundError(ElasticIRError):
    """A dataset is neither under the data root nor downloadable right now."""


class InputFormatError(ElasticIRError):
    """A data file is malformed; the message names the file and line."""
