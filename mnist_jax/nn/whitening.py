"""Patch whitening: first-layer filters that whiten the K×K patches of the images.

With the patches p ∈ R^D (D = K·K·C) of the training images, their covariance
Σ = (1/M) Σ_m (p_m − p̄)(p_m − p̄)ᵀ = V Λ Vᵀ (eigenvectors v_i, eigenvalues λ_i), the
filters w_i = v_i / √(λ_i + ε) map a patch to coordinates z_i = w_iᵀ p whose
covariance is diag(λ_i / (λ_i + ε)) ≈ I: every direction of pixel variation
starts on the same scale, the large smooth ones no longer dominating the small
sharp ones (PCA whitening, as airbench's ``init_whitening_conv``). A conv layer
whose kernel holds ±w_i (both signs, so a ReLU after it keeps each direction)
starts as this whitening; frozen, it is a fixed linear map and its kernel
gradient is never computed.
"""
import numpy as np

EPS = 5e-4   # ε on λ, in units of x = p/255 squared: directions of variance below it are damped


def patches(images, k: int, limit: int = 0) -> np.ndarray:
  """The (M, K·K·C) valid K×K patches of float images (N, H, W, C), in the order of
  a conv kernel's (K, K, C) axes; the first ``limit`` images only, if > 0."""
  x = np.asarray(images if not limit else images[:limit], np.float64)
  n, h, w, c = x.shape
  windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
  # (N, H−K+1, W−K+1, C, K, K) -> (N, H−K+1, W−K+1, K, K, C)
  return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * c)


def eigen(p: np.ndarray) -> tuple:
  """(λ descending, V with v_i in column i) of the covariance of patches ``p``."""
  centred = p - p.mean(axis=0)
  eigenvalues, vectors = np.linalg.eigh(centred.T @ centred / len(p))
  order = np.argsort(eigenvalues)[::-1]
  return eigenvalues[order], vectors[:, order]


def filters(images, k: int, features: int, eps: float = EPS, limit: int = 5000):
  """The (K, K, C, F) kernel of ``features`` filters +w_1, −w_1, +w_2, −w_2, ... (the
  directions of largest variance first; F ≤ 2·K·K·C), w_i = v_i/√(λ_i + ε), from
  the patches of the first ``limit`` images, as a nested tuple (a hashable field)."""
  c = np.asarray(images).shape[-1]
  if not 0 < features <= 2 * k * k * c:
    raise ValueError(f'whitening gives at most 2·K·K·C = {2 * k * k * c} filters, '
                     f'asked for {features}')
  eigenvalues, vectors = eigen(patches(images, k, limit))
  w = vectors / np.sqrt(eigenvalues + eps)                    # (D, D), column i = w_i
  signed = np.stack([w, -w], axis=-1).reshape(k * k * c, -1)  # +w_1, −w_1, +w_2, ...
  kernel = signed[:, :features].reshape(k, k, c, features).astype(np.float32)
  return to_tuple(kernel)


def to_tuple(kernel) -> tuple:
  """A kernel array as nested tuples of floats (hashable: a model field)."""
  return tuple(to_tuple(a) for a in kernel) if np.ndim(kernel) else float(kernel)
