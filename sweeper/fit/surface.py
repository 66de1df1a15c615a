"""The ``surface`` estimator: one robust fit of the loss surface over the runs of every cell,
then the laws as a random-effects meta-regression of the cells' optima.

Stage 1, one fit over every run near every cell's optimum (x = log lr, y = log B in tokens):

    log L_i = l_c + q_c(x_i - x_c, y_i - y_c) / 2
    q = s_x h11 dx^2 + 2 rho sqrt(h11 h22) m dx dy + s_y h22 dy^2
    log h11, log h22 linear in (log N, log D);  s_x = exp(k_x sign dx), s_y = exp(k_y sign dy);
    m = exp(-(|k_x| + |k_y|) / 2), |rho| < 1;   (x_c, y_c) and l_c free per cell.

The shape is shared: the curvature varies log-linearly with N and D (6 parameters for every
cell, where ``smooth`` fits 5 per cell from a handful of runs), its lr-B cross term rho uses the
ridge these grids show, and k_x, k_y let each axis rise faster on one side than the other
(landscapes rise faster towards divergence than towards small steps: a symmetric quadratic
fitted to an asymmetric valley misplaces its minimum). m keeps q positive definite in every
quadrant, so (x_c, y_c) is the minimum of cell c's surface. Each optimum is kept within its
cell's grid (a bound of the fit: no evidence beyond it).

Which runs count, and how much:

* locality: a quadratic in logs only holds near the minimum, so each run is weighted as
  ``smooth`` weights it, exp(-1/2 (excess / w)^2) with excess = L / L_best - 1 and w =
  Step Law's 0.25% near-optimal band (widened to the seed noise where the sweep measured it,
  and until 8 runs of the cell carry weight >= e^-1/2); runs below weight 1e-3 are dropped
  (their terms would not move the fit);
* robustness: Huber loss on the standardised residual r / sigma with Huber's 1.345 (95%
  efficiency under Gaussian noise, Huber 1964), so a spike or a run past the divergence cliff
  counts linearly, not quadratically. sigma is the cell's measured seed noise of one grid
  point (noise.relative / sqrt(replicates)) where the sweep has replicate seeds, else 1.4826 x
  the weighted median absolute residual of a first, least-squares fit (a robust scale of the
  residuals), floored at 1e-5 (the precision the tool reports a regret to).

Stage 2, the laws. No table's optima follow the laws exactly (on Step Law's MoE table the
batch optimum also falls with N, which B = c D^gamma cannot follow), so the laws are fitted as
a random-effects meta-regression (Raudenbush 2009): generalised least squares of the cells'
optima z_c with weight (V_c + Psi)^-1, V_c the optimum's covariance from stage 1 and Psi =
diag(tau_lr^2, tau_B^2) the scatter of the optima around the laws beyond it (DerSimonian-
Laird, per axis; laws.between_cell_variance). A precisely located cell then counts more
than a vague one, but no cell dominates a law that no cell follows exactly. (Fitting the laws
inside stage 1 instead, as the surface's own parameters, was tried first: a fixed-effects
fit lets the few sharpest cells set the law, and on the MoE table its held-out regret was
twice plateau's; docs/fitting.md has the figures.)

Both fits are ``scipy.optimize.least_squares`` (trust-region reflective, analytic Jacobian):
a least-squares pass from ``smooth``'s per-cell optima and median curvature, then the robust
pass. Bootstrap: each replicate resamples the runs of every cell and refits the cells'
optima with the shared shape held at its full-data value (one batch per cell, fit/robust.py),
then draws cells with replacement for the law fit (one batch of all replicates). ``holdout``
refits both stages without each cell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from sweeper.fit.data import FitError, Sweep
from sweeper.fit.estimators import EstimatorFit, cell_features
from sweeper.fit.laws import PowerLawFit, batched_gls, between_cell_variance, resample_counts
from sweeper.fit.noise import noise_width
from sweeper.fit.quadratic import locality_weight, quadratic_optima
from sweeper.fit.robust import batched_huber_lm
from sweeper.fit.select import near_optimal_mask
from sweeper.fit.smooth import Smooth

HUBER = 1.345  # Huber's tuning constant, in units of sigma
SIGMA_FLOOR = 1e-5  # relative loss: below the precision regrets are reported to
MIN_WEIGHT = 1e-3
SKEW_LIMIT = 3.0  # |k|: one side up to e^3 = 20x steeper than the other
RHO_LIMIT = 4.0  # |atanh rho|: |rho| <= 0.9993
SHAPE = 9  # shape parameters: log h11 and log h22 (each 1, log N, log D), atanh rho, k_x, k_y
BOOT_TOLERANCE = 1e-7  # relative cost gain: the optima settle long before 1e-10


@dataclass
class _Runs:
    """The runs one surface fit uses, with every per-run constant the model needs."""

    cell: np.ndarray  # (n,) index into the fitted cells
    x: np.ndarray  # log lr
    y: np.ndarray  # log B (tokens)
    log_loss: np.ndarray
    weight: np.ndarray  # locality weight
    noise: np.ndarray  # sigma from replicate seeds, NaN where the cell has none
    curvature_design: np.ndarray  # (n, 3): 1, centred log N, centred log D of the run's cell
    n_cells: int


@dataclass
class _Stage1:
    theta: np.ndarray  # SHAPE shape parameters, then x_c, y_c, l_c of every cell
    runs: _Runs
    sigma: np.ndarray  # (n,) residual scale of each run
    covariance: np.ndarray  # (C, 2, 2) of each cell's optimum (x_c, y_c)

    @property
    def optima(self) -> np.ndarray:
        c = self.runs.n_cells
        return np.column_stack([self.theta[SHAPE : SHAPE + c], self.theta[SHAPE + c : SHAPE + 2 * c]])


def _shape(
    dx: np.ndarray,
    dy: np.ndarray,
    eta1: np.ndarray,
    eta2: np.ndarray,
    t: np.ndarray,
    kx: np.ndarray,
    ky: np.ndarray,
    derivatives: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """q/2 and (``derivatives``) its derivatives by dx, dy, eta1, eta2, t, kx, ky (all
    broadcast alike)."""
    sgx, sgy = np.sign(dx), np.sign(dy)
    h11, h22 = np.exp(eta1), np.exp(eta2)
    rho = np.tanh(t)
    m = np.exp(-0.5 * (np.abs(kx) + np.abs(ky)))
    g = np.exp(0.5 * (eta1 + eta2)) * m
    a = np.exp(kx * sgx) * h11
    b = np.exp(ky * sgy) * h22
    c = rho * g
    half_q = 0.5 * (a * dx * dx + 2.0 * c * dx * dy + b * dy * dy)
    if not derivatives:
        return half_q, {}
    cross = c * dx * dy
    return half_q, {
        "dx": a * dx + c * dy,
        "dy": c * dx + b * dy,
        "eta1": 0.5 * (a * dx * dx + cross),
        "eta2": 0.5 * (b * dy * dy + cross),
        "t": (1.0 - rho * rho) * g * dx * dy,
        "kx": 0.5 * (sgx * a * dx * dx - np.sign(kx) * cross),
        "ky": 0.5 * (sgy * b * dy * dy - np.sign(ky) * cross),
    }


def _shape_terms(
    shape: np.ndarray, runs: _Runs
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """eta1, eta2 per run and t, kx, ky, for shape rows (R, SHAPE): each (R, n) or (R, 1)."""
    eta1 = shape[:, 0:3] @ runs.curvature_design.T
    eta2 = shape[:, 3:6] @ runs.curvature_design.T
    return eta1, eta2, shape[:, 6:7], shape[:, 7:8], shape[:, 8:9]


def _model(
    theta: np.ndarray, runs: _Runs, scale: np.ndarray, jacobian: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(log L predicted - log L measured) x scale for every run, and (``jacobian``) its
    derivatives: (R, n) and (R, n, p) for theta (R, p) (without: an empty array)."""
    c = runs.n_cells
    x_c = theta[:, SHAPE : SHAPE + c][:, runs.cell]
    y_c = theta[:, SHAPE + c : SHAPE + 2 * c][:, runs.cell]
    level = theta[:, SHAPE + 2 * c :][:, runs.cell]
    half_q, d = _shape(runs.x - x_c, runs.y - y_c, *_shape_terms(theta[:, :SHAPE], runs), jacobian)
    residual = (level + half_q - runs.log_loss) * scale
    if not jacobian:
        return residual, np.empty(0)
    d = {name: value * scale for name, value in d.items()}
    jac = np.zeros(half_q.shape + (theta.shape[1],))
    jac[..., 0:3] = d["eta1"][..., None] * runs.curvature_design
    jac[..., 3:6] = d["eta2"][..., None] * runs.curvature_design
    jac[..., 6] = d["t"]
    jac[..., 7] = d["kx"]
    jac[..., 8] = d["ky"]
    run = np.arange(runs.cell.size)
    jac[:, run, SHAPE + runs.cell] = -d["dx"]
    jac[:, run, SHAPE + c + runs.cell] = -d["dy"]
    jac[:, run, SHAPE + 2 * c + runs.cell] = scale
    return residual, jac


def _weighted_huber(weight: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """least_squares' loss callable for sum_i w_i huber(f_i) (z = f^2; rho, rho', rho'')."""
    d2 = HUBER * HUBER

    def rho(z: np.ndarray) -> np.ndarray:
        inside = z <= d2
        root = np.sqrt(np.maximum(z, d2))
        out = np.empty((3, z.size))
        out[0] = np.where(inside, z, 2.0 * HUBER * root - d2)
        out[1] = np.where(inside, 1.0, HUBER / root)
        out[2] = np.where(inside, 0.0, -0.5 * HUBER / root**3)
        return out * weight

    return rho


def _weighted_median(values: np.ndarray, weight: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weight[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


class Surface(Smooth):
    name = "surface"
    source = (
        "one robust (Huber) fit of log loss over the runs near every cell's optimum, its"
        " curvature (lr-B cross term, asymmetry) shared and varying log-linearly with N and D;"
        " laws by random-effects GLS of the cells' optima"
    )

    # -- stage 1: the shared-shape surface ------------------------------------------------
    def _runs(self, sweep: Sweep) -> _Runs:
        features = cell_features(sweep)
        centred = [features[v] - features[v].mean() for v in ("N", "D")]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cell", "x", "y", "loss", "w", "noise")}
        for c, cell in enumerate(sweep.cells):
            weight = locality_weight(cell.loss, noise_width(self.width, cell.noise), self.min_points)
            used = weight >= MIN_WEIGHT
            sd = np.nan if cell.noise is None else cell.noise.relative
            parts["cell"].append(np.full(int(used.sum()), c))
            parts["x"].append(cell.log_lr[used])
            parts["y"].append(cell.log_batch[used])
            parts["loss"].append(np.log(cell.loss[used]))
            parts["w"].append(weight[used])
            parts["noise"].append(sd / np.sqrt(cell.replicates[used]))
        index = np.concatenate(parts["cell"])
        return _Runs(
            index,
            np.concatenate(parts["x"]),
            np.concatenate(parts["y"]),
            np.concatenate(parts["loss"]),
            np.concatenate(parts["w"]),
            np.concatenate(parts["noise"]),
            np.column_stack([np.ones(index.size), centred[0][index], centred[1][index]]),
            len(sweep.cells),
        )

    def _start_and_bounds(self, sweep: Sweep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """smooth's per-cell optima, their median curvature and lr-B correlation, each cell's
        best loss; every optimum bounded by its cell's grid."""
        z, h = [], []
        for cell in sweep.cells:
            width = noise_width(self.width, cell.noise)
            zc, hc, _, _ = quadratic_optima(
                cell.log_lr, cell.log_batch, cell.loss, np.ones((1, cell.loss.size)), width, self.min_points
            )
            z.append(zc[0])
            h.append(hc[0])
        optima, curv = np.array(z), np.array(h)
        rho = np.median(curv[:, 0, 1] / np.sqrt(curv[:, 0, 0] * curv[:, 1, 1]))
        shape = [np.median(np.log(curv[:, 0, 0])), 0, 0, np.median(np.log(curv[:, 1, 1])), 0, 0]
        shape += [float(np.arctanh(np.clip(rho, -0.9, 0.9))), 0.0, 0.0]
        levels = [np.log(cell.best_loss) for cell in sweep.cells]
        start = np.concatenate([shape, optima[:, 0], optima[:, 1], levels])
        lo_x = [cell.log_lr.min() for cell in sweep.cells]
        hi_x = [cell.log_lr.max() for cell in sweep.cells]
        lo_y = [cell.log_batch.min() for cell in sweep.cells]
        hi_y = [cell.log_batch.max() for cell in sweep.cells]
        free = np.full(len(sweep.cells), np.inf)
        upper = np.concatenate([np.full(6, np.inf), [RHO_LIMIT, SKEW_LIMIT, SKEW_LIMIT], hi_x, hi_y, free])
        lower = np.concatenate(
            [np.full(6, -np.inf), [-RHO_LIMIT, -SKEW_LIMIT, -SKEW_LIMIT], lo_x, lo_y, -free]
        )
        return np.clip(start, lower, upper), lower, upper

    def _stage1(self, sweep: Sweep) -> _Stage1:
        runs = self._runs(sweep)
        start, lower, upper = self._start_and_bounds(sweep)

        def problem(scale: np.ndarray) -> dict[str, Any]:
            return {
                "fun": lambda theta: _model(theta[None], runs, scale, jacobian=False)[0][0],
                "jac": lambda theta: _model(theta[None], runs, scale)[1][0],
                "bounds": (lower, upper),
                "x_scale": "jac",
                "method": "trf",
            }

        try:
            return self._solve(runs, start, lower, upper, problem)
        except (ValueError, np.linalg.LinAlgError) as error:  # non-finite losses, a singular system
            raise FitError(f"the loss surface fit failed: {error}") from None

    def _solve(
        self,
        runs: _Runs,
        start: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        problem: Callable[[np.ndarray], dict[str, Any]],
    ) -> _Stage1:
        """The least-squares pass, sigma, the robust pass, the optima's covariance."""
        # Imported here: scipy.optimize costs a third of a second at start-up, and every CLI
        # command imports the estimators (most never fit a surface).
        from scipy.optimize import least_squares

        first = least_squares(x0=start, **problem(np.sqrt(runs.weight)))
        residual = _model(first.x[None], runs, np.ones(runs.x.size), jacobian=False)[0][0]
        no_noise = np.isnan(runs.noise)
        sigma = runs.noise.copy()
        if no_noise.any():
            sigma[no_noise] = 1.4826 * _weighted_median(np.abs(residual[no_noise]), runs.weight[no_noise])
        sigma = np.maximum(sigma, SIGMA_FLOOR)
        robust = least_squares(x0=first.x, loss=_weighted_huber(runs.weight), **problem(1.0 / sigma))
        if not np.all(np.isfinite(robust.x)):
            raise FitError("the loss surface fit did not converge (no finite optimum)")
        # Covariance of the optima: the inverse of the robust fit's Gauss-Newton information
        # (residuals are in units of sigma), Huber's IRLS weights times the locality weights.
        f = robust.fun
        u = runs.weight * np.minimum(1.0, HUBER / np.maximum(np.abs(f), 1e-300))
        info = (robust.jac * u[:, None]).T @ robust.jac
        inverse = np.linalg.pinv(info)
        c = runs.n_cells
        ix, iy = SHAPE + np.arange(c), SHAPE + c + np.arange(c)
        covariance = np.stack(
            [
                np.stack([inverse[ix, ix], inverse[ix, iy]], -1),
                np.stack([inverse[iy, ix], inverse[iy, iy]], -1),
            ],
            -2,
        )
        return _Stage1(robust.x, runs, sigma, covariance)

    def _resampled_optima(
        self, stage: _Stage1, rng: np.random.Generator, n_boot: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(R, C, 2) each cell's optimum refitted on R run resamples with the shared shape
        fixed, and (R,) whether every cell's refit converged."""
        runs, c = stage.runs, stage.runs.n_cells
        z = np.zeros((n_boot, c, 2))
        converged = np.ones(n_boot, bool)
        for cell in range(c):
            mine = np.flatnonzero(runs.cell == cell)
            own = stage.theta[[SHAPE + cell, SHAPE + c + cell, SHAPE + 2 * c + cell]]
            weight = runs.weight[mine] * resample_counts(rng, mine.size, n_boot)
            solved, ok = self._refit_cell(stage, mine, own, weight)
            z[:, cell] = solved[:, :2]
            converged &= ok
        return z, converged

    def _refit_cell(
        self, stage: _Stage1, mine: np.ndarray, own: np.ndarray, weight: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One cell's (x_c, y_c, l_c) refitted under each row of run weights (R, m), the
        shared shape fixed. Returns (R, 3) and converged (R,)."""
        runs = stage.runs
        sub = dataclasses.replace(
            runs,
            cell=np.zeros(mine.size, int),
            x=runs.x[mine],
            y=runs.y[mine],
            log_loss=runs.log_loss[mine],
            weight=runs.weight[mine],
            noise=runs.noise[mine],
            curvature_design=runs.curvature_design[mine],
            n_cells=1,
        )
        scale = 1.0 / stage.sigma[mine]
        shape = stage.theta[None, :SHAPE]

        def residual(t: np.ndarray, rows: np.ndarray) -> np.ndarray:
            full = np.concatenate([np.broadcast_to(shape, (len(t), SHAPE)), t], axis=1)
            return _model(full, sub, scale, jacobian=False)[0]

        def jacobian(t: np.ndarray, rows: np.ndarray) -> np.ndarray:
            full = np.concatenate([np.broadcast_to(shape, (len(t), SHAPE)), t], axis=1)
            return _model(full, sub, scale)[1][..., SHAPE:]

        return batched_huber_lm(
            own,
            residual,
            jacobian,
            weight,
            delta=HUBER,
            lower=np.array([sub.x.min(), sub.y.min(), -np.inf]),
            upper=np.array([sub.x.max(), sub.y.max(), np.inf]),
            iterations=100,
            tolerance=BOOT_TOLERANCE,
        )

    # -- stage 2: the laws ----------------------------------------------------------------
    def _metric(self, sweep: Sweep, stage: _Stage1) -> tuple[np.ndarray, np.ndarray]:
        """(V_c + Psi)^-1 per cell, and Psi's diagonal (tau_lr^2, tau_B^2)."""
        features = cell_features(sweep)
        tau2 = []
        for axis, variables in ((0, self.lr_variables), (1, self.batch_variables)):
            x = np.column_stack([np.ones(len(sweep.cells))] + [features[v] for v in variables])
            variance = np.maximum(stage.covariance[:, axis, axis], 1e-300)
            tau2.append(between_cell_variance(x, stage.optima[:, axis], variance))
        return np.linalg.inv(stage.covariance + np.diag(tau2)[None]), np.array(tau2)

    def _laws_from(self, sweep: Sweep) -> tuple[np.ndarray, dict[str, float], _Stage1, np.ndarray]:
        """Stage 1 and 2 on ``sweep``: centred law coefficients, the centre, stage 1, metric."""
        # One BLAS thread: these matrices are a few hundred rows by tens of columns, where
        # threads cost more than they save (on a loaded 2-core machine, ~100x in scipy's SVD).
        with threadpool_limits(limits=1, user_api="blas"):
            stage = self._stage1(sweep)
        metric, _ = self._metric(sweep, stage)
        design, centre = self._design(sweep)
        coef, ok = batched_gls(design, metric, stage.optima, np.ones((1, len(sweep.cells))))
        if not ok[0]:
            raise FitError("the cells' optima do not determine the laws (singular design)")
        return coef[0], centre, stage, metric

    def fit(
        self, sweep: Sweep, rng: np.random.Generator, n_boot: int, cell_counts: np.ndarray | None
    ) -> EstimatorFit:
        coef, centre, stage, metric = self._laws_from(sweep)
        n_cells = len(sweep.cells)
        boot = np.empty((0, coef.size))
        n_degenerate = 0
        if n_boot and cell_counts is not None:
            z, converged = self._resampled_optima(stage, rng, n_boot)
            design, _ = self._design(sweep)
            boot, ok = batched_gls(design, metric, z, cell_counts.astype(float))
            ok &= converged
            boot, n_degenerate = boot[ok], int((~ok).sum())
        lr, batch = self._uncentre(np.vstack([coef, boot]), centre)
        features = cell_features(sweep)
        optima, laws = [], []
        for c, cell in enumerate(sweep.cells):
            at_edge = [
                np.isclose(stage.optima[c, 0], bound) for bound in (cell.log_lr.min(), cell.log_lr.max())
            ] + [
                np.isclose(stage.optima[c, 1], bound)
                for bound in (cell.log_batch.min(), cell.log_batch.max())
            ]
            optima.append(
                {
                    "lr": float(np.exp(stage.optima[c, 0])),
                    "batch_size_tokens": float(np.exp(stage.optima[c, 1])),
                    "near_optimal_runs": int(near_optimal_mask(cell.loss, 0.0025).sum()),
                    "note": "the surface's minimum sits on the grid's edge (a bound, not a measurement)"
                    if any(at_edge)
                    else "",
                }
            )
        for target, variables, law, axis in (
            ("lr", self.lr_variables, lr, 0),
            ("batch_size_tokens", self.batch_variables, batch, 1),
        ):
            x = np.column_stack([np.ones(n_cells)] + [features[v] for v in variables])
            y = stage.optima[:, axis]
            total = np.sum((y - y.mean()) ** 2)
            r2 = float(1.0 - np.sum((y - x @ law[0]) ** 2) / total) if total > 0 else float("nan")
            laws.append(
                PowerLawFit(
                    target, variables, law[0], law[1:], r2, int(stage.runs.x.size), n_cells, n_degenerate
                )
            )
        return EstimatorFit(self, laws[0], laws[1], optima, state=None)

    def holdout(self, sweep: Sweep, fit: EstimatorFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        features = cell_features(sweep)
        n_cells = len(sweep.cells)
        log_lr, log_b, ok = np.full(n_cells, np.nan), np.full(n_cells, np.nan), np.zeros(n_cells, bool)
        for held in range(n_cells):
            rest = dataclasses.replace(
                sweep, cells=[c for i, c in enumerate(sweep.cells) if i != held], cache={}
            )
            try:
                coef, centre, _, _ = self._laws_from(rest)
            except FitError:
                continue
            lr, batch = self._uncentre(coef[None], centre)
            for out, law, variables in (
                (log_lr, lr[0], self.lr_variables),
                (log_b, batch[0], self.batch_variables),
            ):
                out[held] = law[0] + sum(law[1 + i] * features[v][held] for i, v in enumerate(variables))
            ok[held] = True
        return log_lr, log_b, ok
