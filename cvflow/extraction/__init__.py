"""Flow and motion scores over many clips: `cvflow.extract` (and `cvflow extract`).

One function, `clip.process_clip`, turns one clip into a score row (and, when asked, a
flow archive); two engines call it: `local` (this process, a progress bar; `clip`) and
`ray` (Ray Data, a pool of actors each holding one model; `ray_engine`, imported only
for that engine). `run.extract` checks the arguments, finds what is already done and
records the rows; `files` finds the clips and writes the archives and the table. The
command `cvflow extract` is `cvflow.cli.extract`.
"""
from __future__ import annotations

from cvflow.extraction.clip import process_clip
from cvflow.extraction.run import ENGINES, SAVE_MODES, ExtractInterrupted, extract, make_settings

__all__ = ["extract", "process_clip", "make_settings", "ExtractInterrupted", "SAVE_MODES", "ENGINES"]
