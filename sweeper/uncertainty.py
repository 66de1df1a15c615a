"""When a fitted law's uncertainty is undetermined, and when a prediction must be refused.

Shared by the fitter (which stores the verdict in fit.json) and by ``sweeper.hparams``
(which re-derives it from the stored replicates, so a fit.json written before the verdict
existed is judged the same way). Pure numpy: a trainer's launch script imports it.

A law's interval is *undetermined* -- printed and stored as such, never as a precise range --
when the bootstrap cannot measure it:

* no bootstrap replicate survived (``--bootstrap 0``, or every one was singular);
* more than half of the replicates were discarded as singular: the survivors are the few
  resamples that happened to be solvable, not a sample of the law's uncertainty;
* an interval of (numerically) zero width: every replicate gave the same law, which happens
  when every cell's optimum is pinned to the same grid value (the edge of the grid), not
  because the law is known exactly;
* R^2 undefined: the cells' optima do not vary at all, so there is nothing to fit.

A prediction is refused (unless forced) when a law behind it is undetermined, when the
target lies more than ``EXTRAPOLATION_LIMIT`` times beyond the fitted range of N or D, or
when rounding the batch to whole sequences (or to ``--round-to``) moves it by more than
``MAX_ROUNDING_FACTOR``.
"""

from __future__ import annotations

import math

import numpy as np

#: Interval widths (in log units: ln prefactor and exponents) below this are zero: no
#: measured law is known to 1e-6 in log space; replicates that agree to it are copies.
ZERO_WIDTH = 1e-6
#: Share of discarded (singular) bootstrap replicates above which the interval is undetermined.
MAX_DISCARDED_SHARE = 0.5
#: Targets more than this many times beyond the fitted N or D range are refused: two orders
#: of magnitude is as far as published lr/batch laws have been checked beyond their proxies
#: (Step Law fits up to ~1B parameters and checks at a few times that; DeepSeek LLM's
#: compute laws extrapolate about 1000x in compute, i.e. ~30x in each of N and D).
EXTRAPOLATION_LIMIT = 100.0
#: Rounding the batch to whole sequences (or to a multiple) may move it by at most this factor.
MAX_ROUNDING_FACTOR = 2.0


def discarded_share(n_kept: int, n_discarded: int) -> float:
    total = n_kept + n_discarded
    return n_discarded / total if total else 0.0


def undetermined_reasons(
    samples: np.ndarray, n_discarded: int, r2: float | None, level: float = 0.95
) -> list[str]:
    """Why a law's interval is undetermined (empty list: it is determined).

    samples: (R, p) kept bootstrap replicates (log prefactor, exponents); n_discarded: the
    singular replicates thrown away; r2: the law's R^2 (None or NaN when undefined)."""
    samples = np.asarray(samples, dtype=float).reshape(len(samples), -1) if len(samples) else np.empty((0, 0))
    reasons = []
    if len(samples) == 0:
        reasons.append("no bootstrap replicate" + (" survived" if n_discarded else "s (--bootstrap 0)"))
    else:
        share = discarded_share(len(samples), n_discarded)
        if share > MAX_DISCARDED_SHARE:
            reasons.append(f"{share:.0%} of the bootstrap replicates were singular and discarded")
        tail = 50.0 * (1.0 - level)
        low, high = np.percentile(samples, [tail, 100.0 - tail], axis=0)
        if np.any(high - low <= ZERO_WIDTH):
            reasons.append(
                "its interval has zero width (every replicate gave the same law:"
                " the cells' optima do not vary, e.g. all at the edge of the grid)"
            )
    if r2 is None or not math.isfinite(r2):
        reasons.append("R^2 is undefined (the cells' optima are all equal)")
    return reasons


def rounding_factor(law_value: float, used_value: float) -> float:
    """How many times rounding moved the batch (>= 1, whichever direction)."""
    ratio = used_value / law_value
    return max(ratio, 1.0 / ratio)


def rounding_refusal(law_tokens: float, sequences: int, seq_len: int) -> str | None:
    """The reason to refuse a batch of ``sequences`` x ``seq_len`` tokens standing for the
    law's ``law_tokens``, or None when rounding moved it by at most MAX_ROUNDING_FACTOR."""
    factor = rounding_factor(law_tokens, sequences * seq_len)
    if factor <= MAX_ROUNDING_FACTOR:
        return None
    return (
        f"the law's batch of {law_tokens:.4g} tokens becomes {sequences} sequence(s) of"
        f" {seq_len} tokens, {factor:.3g}x {'more' if sequences * seq_len > law_tokens else 'less'}"
        f" (limit {MAX_ROUNDING_FACTOR:g}x): use a shorter seq_len or a smaller --round-to"
    )


def refusal_message(reasons: list[str]) -> str:
    """One line naming every reason and the way through."""
    return (
        "refused: "
        + "; ".join(reasons)
        + ". Pass --force (force=True in Python) to use the numbers anyway, with this warning carried"
    )


__all__ = [
    "EXTRAPOLATION_LIMIT",
    "MAX_DISCARDED_SHARE",
    "MAX_ROUNDING_FACTOR",
    "ZERO_WIDTH",
    "discarded_share",
    "refusal_message",
    "rounding_factor",
    "rounding_refusal",
    "undetermined_reasons",
]
