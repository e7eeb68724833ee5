"""Losses: cross-entropy and Hinton's knowledge distillation."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy with integer labels."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def kd_divergence(student_logits: jax.Array, teacher_logits: jax.Array, *, tau: float) -> jax.Array:
  """tau^2 * KL(softmax(t/tau) || softmax(s/tau)), summed over classes, mean over the batch."""
  teacher_log_probs = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / tau)
  return kd_divergence_from_log_probs(student_logits, teacher_log_probs, tau=tau)


def kd_divergence_from_log_probs(
    student_logits: jax.Array, teacher_log_probs: jax.Array, *, tau: float
) -> jax.Array:
  """As `kd_divergence`, for teacher probabilities already softened (and perhaps perturbed)."""
  student_log_probs = jax.nn.log_softmax(student_logits.astype(jnp.float32) / tau)
  teacher_probs = jnp.exp(teacher_log_probs)
  kl = jnp.sum(teacher_probs * (teacher_log_probs - student_log_probs), axis=-1)
  return tau**2 * jnp.mean(kl)


def hinton_kd_loss(student_logits, teacher_logits, labels, *, alpha: float, tau: float):
  """(1 - alpha) CE(s, y) + alpha tau^2 KL(T_tau || S_tau)."""
  return (1 - alpha) * cross_entropy(student_logits, labels) + alpha * kd_divergence(
      student_logits, teacher_logits, tau=tau
  )
