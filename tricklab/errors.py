"""The family of expected errors: what a user can cause and fix (a file, a key, an argument).

The ``tricklab`` command reports every :class:`TricklabError` as one line ``tricklab: error: ...``
and a traceback only with ``--debug``; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class TricklabError(Exception):
    """Base of tricklab's expected errors; the message names the file, key or argument at fault."""


class ModelFileError(TricklabError, ValueError):
    """A run's model.npz is not a tricklab model archive, is corrupt, holds non-finite weights, or
    was written with another configuration than the run's config.toml."""
