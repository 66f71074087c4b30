import numpy as np
import ot
import pytest
from scipy.special import logsumexp

from ota_jax.transport import solve_transport

pytestmark = pytest.mark.core  # Runs at the dependency floors too (.ci/run).


def _official_sinkhorn(cost, mu, nu, eps, iters):
    """The official OTA loop (potentials start at 1, columns first), in float64."""
    u, v = np.ones_like(mu), np.ones_like(nu)
    kernel = lambda: (-cost + u[:, None] + v[None, :]) / eps
    for _ in range(iters):
        v = eps * (np.log(nu + 1e-8) - logsumexp(kernel(), axis=0)) + v
        u = eps * (np.log(mu + 1e-8) - logsumexp(kernel(), axis=1)) + u
    return np.exp(kernel())


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    cost = rng.uniform(0, 3, (5, 40))
    supply = np.array([3.0, 1.0, 4.0, 2.0, 30.0])
    return cost, supply, np.ones(40)


def test_matches_the_official_loop_iteration_for_iteration(problem):
    cost, supply, demand = problem
    for iters in (1, 7, 50):
        plan = solve_transport(cost, supply, demand, epsilon=0.1, num_iters=iters).plan
        np.testing.assert_allclose(
            plan, _official_sinkhorn(cost, supply, demand, 0.1, iters), atol=2e-5
        )


def test_converges_to_pot(problem):
    cost, supply, demand = problem
    result = solve_transport(cost, supply, demand, epsilon=0.5, num_iters=2000)
    want = ot.bregman.sinkhorn_log(supply, demand, cost, reg=0.5, numItermax=5000, stopThr=1e-12)
    np.testing.assert_allclose(result.plan, want, atol=1e-4)
    assert float(result.supply_error) < 1e-3 and float(result.demand_error) < 1e-3


def test_row_offset_changes_nothing_but_the_conditioning(problem):
    cost, supply, demand = problem
    offset = np.array([1e6, -2.0, 0.5, 3e5, 0.0])
    shifted = solve_transport(cost, supply, demand, epsilon=0.1, num_iters=50, row_offset=offset)
    # Same problem written with the offsets added back, solved in float64 by the loop.
    want = _official_sinkhorn(cost + offset[:, None], supply, demand, 0.1, 50)
    np.testing.assert_allclose(shifted.plan, want, atol=1e-4)


def test_zero_supply_rows_ship_nothing_and_change_nothing(problem):
    """A padded supplier (zero supply, arbitrary finite cost) leaves the rest untouched."""
    cost, supply, demand = problem
    padded_cost = np.concatenate([cost[:2], np.zeros((1, cost.shape[1])), cost[2:]])
    padded_supply = np.concatenate([supply[:2], [0.0], supply[2:]])
    padded = solve_transport(padded_cost, padded_supply, demand, epsilon=0.1, num_iters=50)
    alone = solve_transport(cost, supply, demand, epsilon=0.1, num_iters=50)
    plan = np.asarray(padded.plan)
    assert np.all(plan[2] == 0.0)
    np.testing.assert_allclose(np.delete(plan, 2, axis=0), alone.plan, atol=1e-6)
