"""The one user-facing error type.

Expected failures (bad config, missing data, unwritable workdir, NaN loss) raise
``UserError`` with a single sentence that names the problem *and* the fix.
``main`` turns it into one line on stderr and exit code 2 — no traceback.
Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A problem the user can fix; the message says how."""
