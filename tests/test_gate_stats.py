"""The round verdict (bench.report.verdict) on simulated hierarchical timings: seeded, seconds.

The model: a comparison of ``ROWS`` timing rows, each timed in rounds (fresh processes). Each
round has a machine-wide level that drifts between rounds (a random walk shared by every row:
another tenant, the clock), its own per-row noise, and within the round ``SAMPLES`` samples that
are autocorrelated (AR(1), rho 0.8): their median is the round's summary. Sides A and B
alternate rounds (A B A B ...), as ``bench ab`` runs them. The rates printed are the acceptance
figures of the gate's statistics (docs/design.md §7).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.report.verdict import prior_variance, round_verdict
from bench.timing.rounds import DEFAULT_ROUNDS, QUICK_ROUNDS  # bench ab's rounds per side

ROWS = 24  # the layer rows of a quick record
SAMPLES = 10
FACTOR, ALPHA = 1.1, 0.01


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], sd: float = 0.05, rho: float = 0.8) -> np.ndarray:
    """Autocorrelated noise along the last axis (AR(1), stationary sd ``sd``)."""
    out = np.empty(shape)
    e = rng.normal(0, sd, shape[:-1])
    for i in range(shape[-1]):
        e = rho * e + math.sqrt(1 - rho ** 2) * rng.normal(0, sd, shape[:-1])
        out[..., i] = e
    return out


def _simulate_pair(rng: np.random.Generator, rounds: int, slowdown: float = 1.0, drift_sd: float = 0.02,
                   outlier: float | None = None) -> list[tuple[list[float], list[float]]]:
    """Per row, (A round medians, B round medians); B is ``slowdown`` slower. ``outlier``: one
    round (of B) runs that much slower for every row (a machine hiccup)."""
    log_t = np.log(rng.uniform(1e-4, 5e-2, ROWS))[:, None]
    row_sd = rng.uniform(0.01, 0.04, ROWS)[:, None]  # small ops are noisier than big ones
    walk = np.cumsum(rng.normal(0, drift_sd, 2 * rounds))  # one step per slot; slots alternate A, B
    level_a = log_t + walk[0::2][None, :] + rng.normal(0, 1, (ROWS, rounds)) * row_sd
    level_b = log_t + math.log(slowdown) + walk[1::2][None, :] + rng.normal(0, 1, (ROWS, rounds)) * row_sd
    if outlier:
        level_b[:, int(rng.integers(rounds))] += math.log(outlier)
    med_a = np.median(np.exp(level_a[..., None] + _ar1(rng, (ROWS, rounds, SAMPLES))), axis=-1)
    med_b = np.median(np.exp(level_b[..., None] + _ar1(rng, (ROWS, rounds, SAMPLES))), axis=-1)
    return [(list(a), list(b)) for a, b in zip(med_a, med_b)]


def _verdicts(pairs: list[tuple[list[float], list[float]]]) -> list[str]:
    prior = prior_variance(pairs)
    return [round_verdict(a, b, factor=FACTOR, alpha=ALPHA, prior=prior, same_session=True,
                          family_size=len(pairs)).status for a, b in pairs]


def _rates(n: int, seed: int, **kw: object) -> tuple[float, float, float]:
    """(share of pairs with any row regressed, share of rows regressed, share of rows inconclusive)."""
    rng = np.random.default_rng(seed)
    any_bad = rows_bad = rows_inc = 0
    for _ in range(n):
        v = _verdicts(_simulate_pair(rng, **kw))  # type: ignore[arg-type]
        any_bad += "regressed" in v
        rows_bad += v.count("regressed")
        rows_inc += v.count("inconclusive")
    return any_bad / n, rows_bad / (n * ROWS), rows_inc / (n * ROWS)


def test_false_alarms_over_1000_aa_pairs() -> None:
    pairs_bad, rows_bad, rows_inc = _rates(1000, seed=1, rounds=DEFAULT_ROUNDS)
    print(f"\nA/A, {DEFAULT_ROUNDS} rounds per side, {ROWS} rows, drift between rounds: false alarms in "
          f"{pairs_bad:.1%} of 1000 pairs ({rows_bad:.2%} of rows); inconclusive rows {rows_inc:.1%}")
    assert pairs_bad <= 0.01


def _detection(rounds: int, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    detected = sum(_verdicts(_simulate_pair(rng, rounds, slowdown=1.3)).count("regressed") for _ in range(n))
    return detected / (n * ROWS)


def test_detects_a_1_3x_slowdown() -> None:
    rate = _detection(DEFAULT_ROUNDS, 1000, seed=2)
    quick = _detection(QUICK_ROUNDS, 200, seed=6)
    print(f"\n1.3x slower, {DEFAULT_ROUNDS} rounds per side (bench ab): detected in {rate:.1%} of {1000 * ROWS} rows; "
          f"{QUICK_ROUNDS} rounds (bench ab --quick): {quick:.1%} of {200 * ROWS}")
    assert rate >= 0.90


def test_one_slow_outlier_round_is_no_false_alarm() -> None:
    # A 1.5x hiccup in one of B's rounds, for every row: the round is a round, not 20 samples, so
    # it widens the band (inconclusive) instead of reading as a regression.
    pairs_bad, rows_bad, rows_inc = _rates(300, seed=3, rounds=DEFAULT_ROUNDS, outlier=1.5)
    print(f"\nA/A with one 1.5x outlier round: false alarms in {pairs_bad:.1%} of 300 pairs ({rows_bad:.2%} of rows), "
          f"inconclusive rows {rows_inc:.1%}")
    assert pairs_bad <= 0.02


def test_strong_drift_between_rounds_is_no_false_alarm() -> None:
    pairs_bad, _, rows_inc = _rates(300, seed=4, rounds=DEFAULT_ROUNDS, drift_sd=0.06)
    print(f"\nA/A with 6% drift per slot: false alarms in {pairs_bad:.1%} of 300 pairs; "
          f"inconclusive rows {rows_inc:.1%}")
    assert pairs_bad <= 0.01


def test_pooled_sample_test_would_cry_wolf() -> None:
    """The control: the same A/A data judged by a rank test on the pooled raw samples of one round
    per side (the old gate) flags far more than 1 % - which is what the rounds fix."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(5)
    alarms = 0
    for _ in range(200):
        walk = rng.normal(0, 0.05, 2)
        a = np.exp(walk[0] + rng.normal(0, 0.05, SAMPLES))
        b = np.exp(walk[1] + rng.normal(0, 0.05, SAMPLES))
        alarms += mannwhitneyu(b, a, alternative="greater").pvalue < ALPHA
    assert alarms / 200 > 0.05


def test_separate_runs_without_calibration_are_inconclusive_beyond_the_factor() -> None:
    v = round_verdict([1.0, 1.01, 0.99], [1.5, 1.5, 1.51], factor=FACTOR, alpha=ALPHA, prior=1e-4,
                      same_session=False)
    assert v.status == "inconclusive" and "bench ab" in v.note
    v = round_verdict([1.0, 1.01, 0.99], [1.5, 1.5, 1.51], factor=FACTOR, alpha=ALPHA, prior=1e-4,
                      same_session=False, run_to_run_sd=0.02)
    assert v.status == "regressed"
    v = round_verdict([1.0, 1.01, 0.99], [1.5, 1.5, 1.51], factor=FACTOR, alpha=ALPHA, prior=1e-4,
                      same_session=False, run_to_run_sd=0.3)
    assert v.status == "inconclusive"


def test_single_round_records_have_no_band() -> None:
    v = round_verdict([1.0], [1.5], factor=FACTOR, alpha=ALPHA, prior=None, same_session=True)
    assert v.status == "inconclusive" and math.isinf(v.band)
    assert round_verdict([1.0], [1.02], factor=FACTOR, alpha=ALPHA, prior=None, same_session=True).status == "unchanged"


@pytest.mark.parametrize("bad", [[], [0.0], [-1.0]])
def test_a_side_without_rounds_is_an_error(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="at least one positive round"):
        round_verdict(bad, [1.0], factor=FACTOR, alpha=ALPHA, prior=None, same_session=True)
