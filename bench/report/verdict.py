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

Verdicts, with ``band = exp(t * se)`` (the half-width of the row's interval at ``alpha``, as a
factor):

* **regressed**: ``exp(d) > factor`` and the row is a discovery of the family's step-up test
  (:func:`step_up`, Benjamini-Hochberg at ``alpha`` over the rows judged together): with no real
  change anywhere, the chance that a comparison of 40 rows calls *any* row is at most ``alpha``;
  when a slower kernel slows several rows at once, each is judged at a looser threshold than
  Bonferroni's ``alpha / rows``, which could not see a 1.3x change in three noisy rounds;
* **improved**: ``exp(d) < 1/factor`` and a discovery;
* **inconclusive**: neither, and the band is wider than the factor: the rounds are too noisy to
  rule out a change of the factor's size (never exit 1, never headlined);
* **unchanged**: otherwise.

:func:`judge` runs the three steps for one family: :func:`round_test` per row, :func:`step_up`,
:func:`round_verdict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import numpy as np

__all__ = ["RoundVerdict", "RoundTest", "round_test", "step_up", "round_verdict", "judge", "prior_variance",
           "log_rounds", "relative_to_reference", "PRIOR_DF", "MIN_REFERENCE", "VERDICTS"]

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


@dataclass(frozen=True)
class RoundTest:
    """One row's test of "no change" on its round medians, before the family decides.

    ``d`` = mean log new - mean log base; ``se`` its standard error; ``df`` the degrees of freedom
    of its t (``inf``: normal, a calibrated run-to-run sd); ``p`` the two-sided p-value of d = 0
    (NaN: untestable, and ``fixed`` then holds the verdict)."""

    change: float
    d: float
    se: float
    df: float
    p: float
    note: str = ""
    fixed: RoundVerdict | None = None


#: Fewest reference rows with every round for :func:`relative_to_reference` to adjust anything.
MIN_REFERENCE = 3


def relative_to_reference(pairs: Sequence[tuple[Sequence[float | None], Sequence[float | None]]],
                          reference: Sequence[bool]) -> list[tuple[list[float | None], list[float | None]]]:
    """The rows' round medians with each round's common level taken out, where it can be measured.

    The rows of one round come from one process, and on a shared machine the whole process runs
    fast or slow (measured on a 2-core VM: the mean log time of the dense rows moves by sd ~0.08
    between rounds, so every row of a round moves with it). The reference rows (``reference``:
    ops this repository does not implement, e.g. torch's dense convs) measure that level: per
    side and round ``k``, ``L[k]`` = mean over them of ``log t[k]``. Every other row's round ``k``
    becomes ``t[k] * exp(Lbar - L[k])`` (``Lbar``: the mean of ``L`` over both sides), i.e. it is
    timed in units of its own round's reference, so a slow process no longer reads as a slow row,
    and a shift of the reference between the sides is not read as a change of the row either.
    Reference rows themselves are left raw, so a change that slows them still shows. Per row:
    ``(base rounds, new rounds)``, index ``k`` = the ``k``-th process of that side, ``None`` for a
    round without a time. Unchanged when fewer than :data:`MIN_REFERENCE` reference rows have a
    time in every round of both sides, and for a row whose round count differs from theirs.
    """
    def full(rounds: Sequence[float | None], n: int) -> bool:
        return len(rounds) == n and all(v is not None and v > 0 and math.isfinite(v) for v in rounds)

    ref = [pairs[i] for i, is_ref in enumerate(reference) if is_ref]
    if not ref:
        return [(list(b), list(n)) for b, n in pairs]
    n_b, n_n = len(ref[0][0]), len(ref[0][1])
    ref = [(b, n) for b, n in ref if full(b, n_b) and full(n, n_n)]
    if len(ref) < MIN_REFERENCE or not n_b or not n_n:
        return [(list(b), list(n)) for b, n in pairs]
    level_b = np.log(np.asarray([b for b, _ in ref], dtype=float)).mean(axis=0)
    level_n = np.log(np.asarray([n for _, n in ref], dtype=float)).mean(axis=0)
    grand = float(np.concatenate([level_b, level_n]).mean())

    def scaled(rounds: Sequence[float | None], level: np.ndarray) -> list[float | None]:
        if len(rounds) != len(level):
            return list(rounds)
        return [None if v is None else float(v) * math.exp(grand - float(lv)) for v, lv in zip(rounds, level)]

    return [(list(b), list(n)) if is_ref else (scaled(b, level_b), scaled(n, level_n))
            for (b, n), is_ref in zip(pairs, reference)]


def round_test(base: Sequence[float], new: Sequence[float], *, factor: float, prior: float | None,
               same_session: bool, run_to_run_sd: float | None = None) -> RoundTest:
    """The test of one row from its round medians (seconds; ``base`` and ``new``, one value per
    round, at least one positive each).

    Args:
        factor: the smallest change that counts (> 1); used only for the untestable cases.
        prior: :func:`prior_variance` of the comparison (None: no row has two rounds).
        same_session: both sides' rounds were interleaved in one session (``bench ab``); else
            the records were taken separately and the session-to-session noise applies.
        run_to_run_sd: that noise (sd of log time between separately taken runs on this machine),
            where calibrated; None: not calibrated.
    """
    from scipy.stats import norm
    from scipy.stats import t as student_t

    xb, xn = log_rounds(base), log_rounds(new)
    if not len(xb) or not len(xn):
        raise ValueError("round_test needs at least one positive round median per side")
    d = float(xn.mean() - xb.mean())
    change = math.exp(d)
    outside = not 1 / factor <= change <= factor

    def untestable(note: str, status: str) -> RoundTest:
        return RoundTest(change, d, math.inf, math.nan, math.nan, note,
                         RoundVerdict(status, change, math.nan, math.nan, math.inf, note))

    ss_b, df_b = _ss(xb)
    ss_n, df_n = _ss(xn)
    if not same_session:
        if run_to_run_sd is None:
            # The rounds of one record share a minute of the machine's life; records taken minutes apart
            # differ by more, and that has not been measured here: beyond the factor, nothing can be said.
            if not outside:
                return untestable("separate runs", "unchanged")
            return untestable("separate runs and no calibration of this machine's run-to-run noise: compare the "
                              "revisions with `python -m bench ab` (or calibrate with `nox -s gate_check`)",
                              "inconclusive")
        # The calibration is the sd of one record's value between separately taken records: it holds the
        # rounds' own noise too, so it alone makes the interval (normal: it was estimated from many rows).
        se = math.sqrt(2) * run_to_run_sd
        p = 2 * float(norm.sf(abs(d) / se)) if se > 0 else (0.0 if d else 1.0)
        return RoundTest(change, d, se, math.inf, p, f"separate runs: calibrated run-to-run sd {run_to_run_sd:.3f}")
    if prior is None and not df_b + df_n:
        return untestable("one round per side: no band between rounds (use --rounds >= 2, or bench ab)",
                          "inconclusive" if outside else "unchanged")
    prior_df = PRIOR_DF if prior is not None else 0.0
    df = prior_df + df_b + df_n
    se = math.sqrt((prior_df * (prior or 0.0) + ss_b + ss_n) / df * (1 / len(xb) + 1 / len(xn)))
    p = 2 * float(student_t.sf(abs(d) / se, df)) if se > 0 else (0.0 if d else 1.0)
    return RoundTest(change, d, se, df, p)


def step_up(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Which of a family's tests are discoveries at level ``alpha``: the Benjamini-Hochberg
    step-up (the largest ``i`` with ``p_(i) <= alpha * i / m``, and every smaller p). When no row
    changed it calls *anything* with probability at most ``alpha`` - the same guarantee as
    Bonferroni for an A/A pair - but when several rows did change (a slower kernel slows every WCC
    row) each one is judged at a looser threshold than ``alpha / m``. NaN p-values (untestable
    rows) are never discoveries and do not count in ``m``."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    m = len(order)
    cut = 0
    for rank, (p, _) in enumerate(order, start=1):
        if p <= alpha * rank / m:
            cut = rank
    hits = {i for _, i in order[:cut]}
    return [i in hits for i in range(len(pvalues))]


def round_verdict(test: RoundTest, *, factor: float, alpha: float, significant: bool) -> RoundVerdict:
    """The verdict on one row from its :func:`round_test` and whether the family called it
    (:func:`step_up`). The band is the row's own interval at ``alpha``."""
    from scipy.stats import norm
    from scipy.stats import t as student_t

    if test.fixed is not None:
        return test.fixed
    q = float(norm.ppf(1 - alpha / 2)) if math.isinf(test.df) else float(student_t.ppf(1 - alpha / 2, test.df))
    half = q * test.se
    low, high, band = math.exp(test.d - half), math.exp(test.d + half), math.exp(half)
    note = test.note
    if test.change > factor and significant:
        status = "regressed"
    elif test.change < 1 / factor and significant:
        status = "improved"
    elif band > factor:
        status = "inconclusive"
        note = "; ".join(filter(None, [note, f"noise: band +-x{band:.2f} between rounds is wider than x{factor:g}"]))
    else:
        status = "unchanged"
        if low <= 1 <= high and test.d:
            note = "; ".join(filter(None, [note, f"noise: x{test.change:.2f} is inside the band +-x{band:.2f}"]))
    return RoundVerdict(status, test.change, low, high, band, note)


def judge(pairs: Sequence[tuple[Sequence[float | None], Sequence[float | None]]], *, factor: float, alpha: float,
          same_session: Sequence[bool], run_to_run_sd: Sequence[float | None] | None = None,
          reference: Sequence[bool] | None = None, groups: Sequence[Hashable] | None = None) -> list[RoundVerdict]:
    """The verdicts of a family of rows judged together: per row, base rounds and new rounds,
    aligned by round as :func:`relative_to_reference` takes them.

    Steps: within each of ``groups`` (rows timed in the same processes under the same settings,
    e.g. one thread count; default: one group), the rows that are not ``reference`` are made
    relative to the group's reference rows; a prior variance per kind of row (reference, relative:
    their noise differs); each row's :func:`round_test` (``same_session`` and ``run_to_run_sd``: one
    value per row; no ``run_to_run_sd``: no row is calibrated); the :func:`step_up` over the whole
    family at ``alpha``; each row's :func:`round_verdict`.
    """
    n_rows = len(pairs)
    ref = list(reference) if reference is not None else [True] * n_rows
    keys = list(groups) if groups is not None else [0] * n_rows
    same = list(same_session)
    sds = list(run_to_run_sd) if run_to_run_sd is not None else [None] * n_rows
    if len(same) != n_rows or len(sds) != n_rows:
        raise ValueError(f"judge: {n_rows} rows but {len(same)} same_session and {len(sds)} run_to_run_sd values")
    adjusted: list[tuple[list[float | None], list[float | None]]] = [(list(b), list(n)) for b, n in pairs]
    if reference is not None:
        for key in dict.fromkeys(keys):
            idx = [i for i in range(n_rows) if keys[i] == key]
            for i, row in zip(idx, relative_to_reference([pairs[i] for i in idx], [ref[i] for i in idx])):
                adjusted[i] = row
    clean = [([v for v in b if v is not None], [v for v in n if v is not None]) for b, n in adjusted]
    priors = {kind: prior_variance([p for p, r in zip(clean, ref) if r == kind]) for kind in (True, False)}
    tests = [round_test(b, n, factor=factor, prior=priors[r], same_session=sm, run_to_run_sd=sd)
             for (b, n), r, sm, sd in zip(clean, ref, same, sds)]
    hits = step_up([t.p for t in tests], alpha)
    return [round_verdict(t, factor=factor, alpha=alpha, significant=h) for t, h in zip(tests, hits)]
