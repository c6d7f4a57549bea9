"""The timing verdict on rounds: regressed, improved, unchanged or inconclusive (docs/design.md §7).

A *round* is one fresh process that timed every row once (``bench timing --rounds``, ``bench
ab``); its summary is the median of its samples. The samples inside one round are not
independent (the machine's state - other tenants, the clock, the page cache, thread placement -
holds for the whole process), so a test on pooled raw samples reads any shift between two
processes as "significant". The unit of replication is the round (Kalibera & Jones, 2013):
every verdict here is computed on the round medians only.

The statistic, per row: ``d = mean(log new rounds) - mean(log base rounds)`` (the log of the
ratio of geometric means), with a t interval whose variance is the rows' pooled between-round
variance, moderated towards a *prior* - the median of that variance over every row of the same
comparison, worth :data:`PRIOR_DF` degrees of freedom - because two or three rounds alone
estimate a variance badly (the same shrinkage as limma's moderated t). Two records taken in
separate sessions are judged with the machine's calibrated run-to-run noise instead (the sd of
one record's value between separately taken records, :mod:`bench.report.calibration`): the rounds
of one record do not cover the minutes between records. Without a calibration they cannot be
told apart beyond the factor at all.

Verdicts, with ``band = exp(t * se)`` (the half-width of the interval, as a factor):

* **regressed**: ``exp(d) > factor`` and the interval at ``alpha / rows`` (Bonferroni over the
  rows judged together, so that a record of 40 rows does not get 40 chances of a false alarm)
  lies above 1;
* **improved**: ``exp(d) < 1/factor`` and that interval lies below 1;
* **inconclusive**: neither, and the band is wider than the factor: the rounds are too noisy to
  rule out a change of the factor's size (never exit 1, never headlined);
* **unchanged**: otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = ["RoundVerdict", "round_verdict", "prior_variance", "log_rounds", "PRIOR_DF", "VERDICTS"]

#: The four verdicts of a timing row.
VERDICTS = ("regressed", "improved", "unchanged", "inconclusive")
#: Weight of the comparison-wide prior variance, in degrees of freedom.
PRIOR_DF = 4.0


@dataclass(frozen=True)
class RoundVerdict:
    """One row's verdict. ``change`` = new / base (ratio of geometric means of the round
    medians); ``low``/``high`` its interval; ``band`` the interval's half-width as a factor
    (``x1.08`` means +-8 %); ``note`` why, in words."""

    status: str
    change: float
    low: float
    high: float
    band: float
    note: str


def log_rounds(rounds: Iterable[float]) -> np.ndarray:
    """Log of the positive round medians (others are dropped: a round without a time has no
    summary)."""
    arr = np.asarray([r for r in rounds if r is not None and r > 0 and math.isfinite(r)], dtype=float)
    return np.log(arr)


def _ss(x: np.ndarray) -> tuple[float, int]:
    """(sum of squared deviations, degrees of freedom) of one side's log round medians."""
    if len(x) < 2:
        return 0.0, 0
    return float(((x - x.mean()) ** 2).sum()), len(x) - 1


def prior_variance(pairs: Iterable[tuple[Sequence[float], Sequence[float]]]) -> float | None:
    """The comparison-wide between-round variance of log round medians: the median over the rows
    that have at least two rounds on a side (``pairs``: per row, (base rounds, new rounds)); None
    when no row has two rounds (old single-round records)."""
    variances = []
    for base, new in pairs:
        ss_b, df_b = _ss(log_rounds(base))
        ss_n, df_n = _ss(log_rounds(new))
        if df_b + df_n:
            variances.append((ss_b + ss_n) / (df_b + df_n))
    return float(np.median(variances)) if variances else None


def round_verdict(base: Sequence[float], new: Sequence[float], *, factor: float, alpha: float,
                  prior: float | None, same_session: bool, run_to_run_sd: float | None = None,
                  family_size: int = 1) -> RoundVerdict:
    """The verdict on one row from its round medians (seconds; ``base`` and ``new``, one value per
    round, at least one each).

    Args:
        factor: the smallest change that counts (> 1).
        alpha: two-sided level of the interval (0.01: a 99 % interval).
        prior: :func:`prior_variance` of the comparison (None: no row has two rounds).
        same_session: both sides' rounds were interleaved in one session (``bench ab``); else
            the records were taken separately and the session-to-session noise applies.
        run_to_run_sd: that noise (sd of log time between separately taken runs on this machine),
            where calibrated; None: not calibrated.
        family_size: the number of timing rows judged together. A change is called only when its
            interval at ``alpha / family_size`` excludes 1 (Bonferroni), so that the chance of *any*
            false alarm in the comparison stays below ``alpha``; the band is the row's own interval
            at ``alpha``.
    """
    from scipy.stats import norm
    from scipy.stats import t as student_t

    xb, xn = log_rounds(base), log_rounds(new)
    if not len(xb) or not len(xn):
        raise ValueError("round_verdict needs at least one positive round median per side")
    d = float(xn.mean() - xb.mean())
    change = math.exp(d)
    ss_b, df_b = _ss(xb)
    ss_n, df_n = _ss(xn)
    df_own = df_b + df_n
    if not same_session:
        if run_to_run_sd is None:
            # The rounds of one record share a minute of the machine's life; records taken minutes apart
            # differ by more, and that has not been measured here: beyond the factor, nothing can be said.
            if 1 / factor <= change <= factor:
                return RoundVerdict("unchanged", change, math.nan, math.nan, math.inf, "separate runs")
            return RoundVerdict("inconclusive", change, math.nan, math.nan, math.inf,
                                "separate runs and no calibration of this machine's run-to-run noise: compare "
                                "the revisions with `python -m bench ab` (or calibrate with `nox -s gate_check`)")
        # The calibration is the sd of one record's value between separately taken records: it holds the
        # rounds' own noise too, so it alone makes the interval (normal: it was estimated from many rows).
        se = math.sqrt(2) * run_to_run_sd
        half = float(norm.ppf(1 - alpha / 2)) * se
        strict = float(norm.ppf(1 - alpha / (2 * max(1, family_size)))) * se
        note = f"separate runs: calibrated run-to-run sd {run_to_run_sd:.3f}"
    else:
        if prior is None and not df_own:
            return RoundVerdict("inconclusive" if not 1 / factor <= change <= factor else "unchanged", change,
                                math.nan, math.nan, math.inf,
                                "one round per side: no band between rounds (use --rounds >= 2, or bench ab)")
        prior_df = PRIOR_DF if prior is not None else 0.0
        df = prior_df + df_own
        se = math.sqrt((prior_df * (prior or 0.0) + ss_b + ss_n) / df * (1 / len(xb) + 1 / len(xn)))
        half = float(student_t.ppf(1 - alpha / 2, df)) * se
        strict = float(student_t.ppf(1 - alpha / (2 * max(1, family_size)), df)) * se
        note = ""
    low, high, band = math.exp(d - half), math.exp(d + half), math.exp(half)
    if change > factor and d - strict > 0:
        status = "regressed"
    elif change < 1 / factor and d + strict < 0:
        status = "improved"
    elif band > factor:
        status = "inconclusive"
        note = "; ".join(filter(None, [note, f"noise: band +-x{band:.2f} between rounds is wider than x{factor:g}"]))
    else:
        status = "unchanged"
        if low <= 1 <= high and abs(d) > 0:
            note = "; ".join(filter(None, [note, f"noise: x{change:.2f} is inside the band +-x{band:.2f}"]))
    return RoundVerdict(status, change, low, high, band, note)
