"""Writing a file so that no reader (or rerun after a crash) ever sees half of it."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(final, write, tmp) -> None:
    """`write(tmp)`, then rename `tmp` over `final` (atomic on one file system). `tmp`
    must be on final's file system; it is removed when writing or renaming fails."""
    try:
        write(tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
