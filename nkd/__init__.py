"""nkd: noisy knowledge distillation in JAX (Arani, Sarfraz, Zonooz, WACV 2021)."""

__version__ = "0.1.0"
