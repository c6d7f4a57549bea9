"""The round verdict (bench.report.verdict) on simulated hierarchical timings: seeded, seconds.

The model: a comparison of ``ROWS`` timing rows, each timed in rounds (fresh processes). Each
round has a machine-wide level shared by every row of the round (a random walk between rounds,
plus a per-process level: another tenant, the clock), its own per-row noise, and within the round
``SAMPLES`` samples that are autocorrelated (AR(1), rho 0.8): their median is the round's
summary. Sides A and B alternate rounds (A B A B ...), as ``bench ab`` runs them, and the WCC rows
are judged relative to the dense rows of their round, as ``bench compare`` judges them. The
noise levels are the ones measured on this project's 2-core VM. The rates printed are the acceptance
figures of the gate's statistics (docs/design.md §7).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.report.verdict import judge, relative_to_reference, round_test, round_verdict, step_up
from bench.timing.rounds import AB_ROUNDS  # bench ab's rounds per side

ROWS = 18  # the forward layer rows of bench ab --quick: 6 WCC cpu rows, 3 QuantConv2d, 9 dense
CHANGED = 6  # a slower WCC cpu forward slows the 6 WCC rows
REFERENCE = np.arange(ROWS) >= 9  # the dense rows: torch's ops, which the repository's code does not change
SAMPLES = 3  # bench ab --quick's samples per row and round
#: Noise measured on this project's 2-core VM (bench ab --quick rounds, one thread, CPU time): the
#: dense rows' mean log time moves by COMMON_SD between rounds (the whole process is fast or slow),
#: a row's own log round median scatters by ROUND_SD around that (rows differ), and the samples of a
#: round by SAMPLE_SD.
COMMON_SD = 0.08
ROUND_SD = (0.02, 0.10)
SAMPLE_SD = 0.06
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
                   outlier: float | None = None, changed: int = CHANGED) -> list[tuple[list[float], list[float]]]:
    """Per row, (A round medians, B round medians); the first ``changed`` rows of B are ``slowdown``
    slower. Every round has a level shared by all its rows (COMMON_SD) on top of a drift between
    rounds (a random walk over the slots A B A B ...). ``outlier``: one round (of B) runs that much
    slower for every row (a machine hiccup)."""
    log_t = np.log(rng.uniform(1e-2, 5e-1, ROWS))[:, None]
    row_sd = rng.uniform(*ROUND_SD, ROWS)[:, None]  # rows differ in how much their rounds scatter
    slot = np.cumsum(rng.normal(0, drift_sd, 2 * rounds)) + rng.normal(0, COMMON_SD, 2 * rounds)
    shift = np.where(np.arange(ROWS) < changed, math.log(slowdown), 0.0)[:, None]
    level_a = log_t + slot[0::2][None, :] + rng.normal(0, 1, (ROWS, rounds)) * row_sd
    level_b = log_t + shift + slot[1::2][None, :] + rng.normal(0, 1, (ROWS, rounds)) * row_sd
    if outlier:
        level_b[:, int(rng.integers(rounds))] += math.log(outlier)
    noise = lambda: _ar1(rng, (ROWS, rounds, SAMPLES), sd=SAMPLE_SD)  # noqa: E731
    med_a = np.median(np.exp(level_a[..., None] + noise()), axis=-1)
    med_b = np.median(np.exp(level_b[..., None] + noise()), axis=-1)
    return [(list(a), list(b)) for a, b in zip(med_a, med_b)]


def _verdicts(pairs: list[tuple[list[float], list[float]]]) -> list[str]:
    verdicts = judge(pairs, factor=FACTOR, alpha=ALPHA, same_session=[True] * len(pairs), reference=list(REFERENCE))
    return [v.status for v in verdicts]


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
    pairs_bad, rows_bad, rows_inc = _rates(1000, seed=1, rounds=AB_ROUNDS)
    print(f"\nA/A, {AB_ROUNDS} rounds per side, {ROWS} rows, drift between rounds: false alarms in "
          f"{pairs_bad:.1%} of 1000 pairs ({rows_bad:.2%} of rows); inconclusive rows {rows_inc:.1%}")
    assert pairs_bad <= 0.01


def _detection(rounds: int, n: int, seed: int, changed: int) -> tuple[float, float]:
    """(share of the changed rows called regressed, share of pairs in which every one was)."""
    rng = np.random.default_rng(seed)
    rows = every = 0
    for _ in range(n):
        hit = _verdicts(_simulate_pair(rng, rounds, slowdown=1.3, changed=changed))[:changed].count("regressed")
        rows += hit
        every += hit == changed
    return rows / (n * changed), every / n


def test_detects_a_1_3x_slowdown() -> None:
    rate, every = _detection(AB_ROUNDS, 1000, seed=2, changed=CHANGED)
    five, five_every = _detection(5, 300, seed=6, changed=CHANGED)
    alone, _ = _detection(AB_ROUNDS, 300, seed=7, changed=1)
    print(f"\n1.3x slower in the {CHANGED} WCC of {ROWS} rows, {AB_ROUNDS} rounds per side (bench ab): {rate:.1%} "
          f"of those rows regressed, all of them in {every:.1%} of 1000 pairs; 5 rounds: {five:.1%}, all in "
          f"{five_every:.1%} of 300; one WCC row alone, {AB_ROUNDS} rounds: {alone:.1%}")
    assert rate >= 0.90


def test_one_slow_outlier_round_is_no_false_alarm() -> None:
    # A 1.5x hiccup in one of B's rounds, for every row: the round is a round, not 20 samples, so
    # it widens the band (inconclusive) instead of reading as a regression.
    pairs_bad, rows_bad, rows_inc = _rates(300, seed=3, rounds=AB_ROUNDS, outlier=1.5)
    print(f"\nA/A with one 1.5x outlier round: false alarms in {pairs_bad:.1%} of 300 pairs ({rows_bad:.2%} of rows), "
          f"inconclusive rows {rows_inc:.1%}")
    assert pairs_bad <= 0.02


def test_strong_drift_between_rounds_is_no_false_alarm() -> None:
    pairs_bad, _, rows_inc = _rates(300, seed=4, rounds=AB_ROUNDS, drift_sd=0.06)
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
        a = np.exp(walk[0] + rng.normal(0, 0.05, 10))  # the old gate: 10 samples of one process per side
        b = np.exp(walk[1] + rng.normal(0, 0.05, 10))
        alarms += mannwhitneyu(b, a, alternative="greater").pvalue < ALPHA
    assert alarms / 200 > 0.05


def test_separate_runs_without_calibration_are_inconclusive_beyond_the_factor() -> None:
    def verdict(sd: float | None) -> object:
        test = round_test([1.0, 1.01, 0.99], [1.5, 1.5, 1.51], factor=FACTOR, prior=1e-4, same_session=False,
                          run_to_run_sd=sd)
        return round_verdict(test, factor=FACTOR, alpha=ALPHA, significant=step_up([test.p], ALPHA)[0])

    v = verdict(None)
    assert v.status == "inconclusive" and "bench ab" in v.note
    assert verdict(0.02).status == "regressed"
    assert verdict(0.3).status == "inconclusive"


def test_single_round_records_have_no_band() -> None:
    v = judge([([1.0], [1.5])], factor=FACTOR, alpha=ALPHA, same_session=[True])[0]
    assert v.status == "inconclusive" and math.isinf(v.band)
    assert judge([([1.0], [1.02])], factor=FACTOR, alpha=ALPHA, same_session=[True])[0].status == "unchanged"


def test_judge_wants_one_session_flag_per_row() -> None:
    with pytest.raises(ValueError, match="2 rows but 1 same_session"):
        judge([([1.0], [1.0]), ([1.0], [1.0])], factor=FACTOR, alpha=ALPHA, same_session=[True])


@pytest.mark.parametrize("bad", [[], [0.0], [-1.0]])
def test_a_side_without_rounds_is_an_error(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="at least one positive round"):
        round_test(bad, [1.0], factor=FACTOR, prior=None, same_session=True)


def test_step_up_calls_what_bonferroni_would_and_more_when_many_rows_moved() -> None:
    # Benjamini-Hochberg at 0.05 over 4 p-values: thresholds 0.0125, 0.025, 0.0375, 0.05.
    assert step_up([0.04, 0.001, 0.03, 0.02], 0.05) == [True, True, True, True]  # 0.04 <= 0.05 carries all
    assert step_up([0.2, 0.001, 0.03, 0.02], 0.05) == [False, True, True, True]  # 0.03 <= 0.0375
    assert step_up([0.2, 0.001, 0.9, 0.3], 0.05) == [False, True, False, False]  # only Bonferroni's hit
    assert step_up([0.2, 0.02, 0.9, 0.3], 0.05) == [False, False, False, False]  # 0.02 > 0.0125
    assert step_up([float("nan"), 0.01], 0.05) == [False, True]  # untestable rows do not count


def test_rows_are_judged_relative_to_their_rounds_dense_rows() -> None:
    # Three dense rows and one WCC row, 4 rounds per side. Round 2 of the new side ran in a slow
    # process (x1.5 for every row); the WCC row itself did not change. Relative to its round's
    # dense rows it is flat, so its slow round vanishes; the dense rows keep their raw rounds.
    slow = [1.0, 1.0, 1.5, 1.0]
    dense = [([t] * 4, [t * f for f in slow]) for t in (1.0, 2.0, 4.0)]
    wcc = ([0.5] * 4, [0.5 * f for f in slow])
    out = relative_to_reference([*dense, wcc], [True, True, True, False])
    assert out[:3] == [(list(b), list(n)) for b, n in dense]
    assert out[3][0] == pytest.approx(out[3][1]) and len(set(round(v, 12) for v in out[3][0] + out[3][1])) == 1
    # A change of the WCC row alone survives the adjustment, as a ratio.
    moved = relative_to_reference([*dense, ([0.5] * 4, [0.65 * f for f in slow])], [True, True, True, False])[3]
    assert np.exp(np.mean(np.log(moved[1])) - np.mean(np.log(moved[0]))) == pytest.approx(1.3)
    # A failed round (None) stays None; too few complete reference rows: nothing is adjusted.
    gap = relative_to_reference([*dense, ([0.5, None, 0.5, 0.5], wcc[1])], [True, True, True, False])[3]
    assert gap[0][1] is None
    few = [dense[0], (dense[1][0], [None, 2.0, 2.0, 2.0]), dense[2], wcc]
    assert relative_to_reference(few, [True, True, True, False])[3] == (list(wcc[0]), list(wcc[1]))


def test_gate_check_tallies_a_planted_pair() -> None:
    import pandas as pd

    from bench.rows import LayerKey
    from bench.timing.gate_check import tally_planted

    def key(op: str) -> LayerKey:
        return LayerKey("timing:process-clock", "cpu", "1", "extra", "1x8x8@16x16", op, "fwd", "float32",
                        "cpu" if op == "wcc" else None, "0.25" if op == "wcc" else "-", "3" if op == "wcc" else "-")

    frame = pd.DataFrame({"rule": ["timing", "timing", "timing", "timing", "memory"],
                          "key": [key("wcc"), key("wcc"), key("dense_nchw"), key("quantconv"), key("wcc")],
                          "status": ["regressed", "inconclusive", "regressed", "unchanged", "regressed"],
                          "change": [1.3, 1.2, 1.15, 1.0, 2.0]})
    hit, wcc, others = tally_planted(frame)
    assert (hit, len(wcc), others) == (1, 2, 1)
