import jax.numpy as jnp
import numpy as np
import pytest

from nkd import losses


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


S = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
T = np.array([[3.0, 0.0, -1.0], [0.0, 0.0, 4.0]])
Y = np.array([0, 1])


def test_cross_entropy_by_hand():
  p = _softmax(S)
  expected = -(np.log(p[0, 0]) + np.log(p[1, 1])) / 2
  assert losses.cross_entropy(jnp.asarray(S), jnp.asarray(Y)) == pytest.approx(expected, 1e-6)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_kd_divergence_is_batchmean_kl_times_tau_squared(tau):
  pt, ps = _softmax(T / tau), _softmax(S / tau)
  kl_rows = (pt * (np.log(pt) - np.log(ps))).sum(-1)
  expected = tau**2 * kl_rows.mean()
  got = losses.kd_divergence(jnp.asarray(S), jnp.asarray(T), tau=tau)
  assert got == pytest.approx(expected, rel=1e-5)


def test_hinton_loss_mixes_ce_and_kd():
  got = losses.hinton_kd_loss(jnp.asarray(S), jnp.asarray(T), jnp.asarray(Y), alpha=0.9, tau=4.0)
  ce = losses.cross_entropy(jnp.asarray(S), jnp.asarray(Y))
  kd = losses.kd_divergence(jnp.asarray(S), jnp.asarray(T), tau=4.0)
  assert got == pytest.approx(0.1 * float(ce) + 0.9 * float(kd), rel=1e-6)
  # Identical logits: the KD term vanishes.
  assert losses.kd_divergence(jnp.asarray(S), jnp.asarray(S), tau=4.0) == pytest.approx(0, abs=1e-6)
