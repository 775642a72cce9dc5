"""Recordings as files researchers can open: Parquet datasets and Tardis-style CSV.

:func:`export_recording` replays a recording (exactly as ``replay`` does) and writes its events;
``backpack-actors export RECORDING --format parquet|tardis-csv --out DIR`` is the command line.
Parquet needs the ``parquet`` extra (pyarrow). The layout and columns are in ``docs/export.md``.
"""

from __future__ import annotations

from backpack_actors.export.columns import at_ns, received_at_ns, seconds_to_ns
from backpack_actors.export.run import ExportFormat, ExportSummary, export_recording

__all__ = [
    "ExportFormat",
    "ExportSummary",
    "at_ns",
    "export_recording",
    "received_at_ns",
    "seconds_to_ns",
]
