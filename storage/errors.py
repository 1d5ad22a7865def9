"""The project's own errors: a user's mistake, not a bug.

:class:`UserError` is what the command line (``pipelines.cli.main``) turns into one line,
``pipelines <stage>: error: <message>``, and exit status 2; anything else is a bug and keeps its
traceback. So its message names the thing (a setting, a file, a checkpoint) and the fix. Every
package raises it (``storage`` depends on nothing else of the project); a kind of mistake gets
a subclass where code or tests tell the kinds apart.
"""

from __future__ import annotations


class UserError(Exception):
    """A setting, an input or a checkpoint the user can fix; the message says how."""


class MissingInput(UserError, FileNotFoundError):
    """An input that is not there or cannot be read (a tokenizer, token shards, a data file)."""


class SettingError(UserError, ValueError):
    """A setting that cannot work here (with this index, these dumps, this many ranks): named, with the fix."""
