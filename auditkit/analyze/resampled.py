"""What a table's bootstrap statistic is: :class:`Resampled`, the declaration an analysis slice
makes for each table whose intervals a shared bootstrap pass
(:func:`auditkit.analyze.uncertainty.add_bootstrap_intervals`) adds. Kept apart from that pass,
and free of heavy imports, so that declaring a slice loads no numerical code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from auditkit.analyze.uncertainty import Resamples

Samples = Callable[["pd.DataFrame", "Resamples"], "np.ndarray"]
"""A bootstrap statistic: (the table, one chunk of resamples) -> the resampled measures,
[resamples, rows, measures]."""


@dataclass(frozen=True)
class Resampled:
    """A table whose 95% intervals a bootstrap pass adds after the table is built. Every pass
    draws its resamples from generators seeded with ``statistics.seed``, so a table's intervals
    are the same whichever pass resamples it and whichever other tables share that pass."""

    table: str
    measures: tuple[str, ...]
    """The columns that gain ``<measure>_ci_low`` and ``<measure>_ci_high``, in the order
    ``samples`` returns them."""
    samples: Samples


__all__ = ["Resampled", "Samples"]
