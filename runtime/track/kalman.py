"""Constant-velocity Kalman filters over boxes, vectorised over tracks.

The state of one track is 8 numbers, the 4 measured box numbers and their velocities. Two parametrisations are used
by the trackers (the same noise model as ByteTrack / BoT-SORT, where every standard deviation is proportional to the
box size):

* ``XYAH``: centre x, centre y, aspect ratio w/h, height (ByteTrack, OC-SORT);
* ``XYWH``: centre x, centre y, width, height (BoT-SORT, TrackTrack).

Every function takes ``(k, 8)`` means and ``(k, 8, 8)`` covariances (float64) and returns new arrays; the arithmetic
is grouped as in Ultralytics' filters so that tracks evolve to the same floating-point values.
"""

from __future__ import annotations

import numpy as np

POSITION_WEIGHT = 1.0 / 20
VELOCITY_WEIGHT = 1.0 / 160
_TRANSITION = np.eye(8) + np.eye(8, k=4)  # x_{t+1} = x_t + v_t
_TRANSITION_T = np.ascontiguousarray(_TRANSITION.T)


class BoxKalman:
    """One parametrisation of the box state; ``aspect`` True for XYAH, False for XYWH."""

    def __init__(self, aspect: bool):
        self.aspect = aspect

    # --- noise models: (k, n) standard deviations from the size columns of the state -----------------------------
    def _sizes(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(width-like, height) scale per row: XYAH scales everything by h, XYWH scales x/w by w and y/h by h."""
        h = state[:, 3]
        return (h, h) if self.aspect else (state[:, 2], h)

    def _stds(self, state: np.ndarray, position: float, velocity: float | None, aspect_pos: float,
              aspect_vel: float) -> np.ndarray:
        w, h = self._sizes(state)
        one = np.ones_like(h)
        if self.aspect:
            cols = [position * h, position * h, aspect_pos * one, position * h]
            if velocity is not None:
                cols += [velocity * h, velocity * h, aspect_vel * one, velocity * h]
        else:
            cols = [position * w, position * h, position * w, position * h]
            if velocity is not None:
                cols += [velocity * w, velocity * h, velocity * w, velocity * h]
        return np.stack(cols, axis=1)

    # --- filter steps --------------------------------------------------------------------------------------------
    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from (k, 4) measurements: zero velocity, covariance from the box size."""
        z = np.asarray(measurements, dtype=np.float64)
        mean = np.concatenate([z, np.zeros_like(z)], axis=1)
        std = self._stds(z, 2 * POSITION_WEIGHT, 10 * VELOCITY_WEIGHT, 1e-2, 1e-5)
        cov = np.zeros((len(z), 8, 8))
        cov[:, range(8), range(8)] = np.square(std)
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step of constant-velocity motion with size-proportional process noise."""
        std = self._stds(mean, POSITION_WEIGHT, VELOCITY_WEIGHT, 1e-2, 1e-5)
        mean = mean @ _TRANSITION_T
        cov = np.matmul(np.matmul(_TRANSITION, cov), _TRANSITION_T)
        cov[:, range(8), range(8)] += np.square(std)
        return mean, cov

    def update(self, mean: np.ndarray, cov: np.ndarray, measurements: np.ndarray,
               confidences: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Correct (k,) states with (k, 4) measurements. ``confidences`` scales the measurement noise by
        max(1 - confidence, 0.05) (NSA Kalman, used by TrackTrack)."""
        std = self._stds(mean, POSITION_WEIGHT, None, 1e-1, 0.0)
        noise = np.square(std)
        if confidences is not None:
            noise = noise * np.maximum(1.0 - np.asarray(confidences, dtype=np.float64), 0.05)[:, None]
        projected = cov[:, :4, :4].copy()
        projected[:, range(4), range(4)] += noise
        gain = np.swapaxes(np.linalg.solve(projected, np.swapaxes(cov[:, :, :4], 1, 2)), 1, 2)  # (k, 8, 4)
        innovation = measurements - mean[:, :4]
        new_mean = mean + np.matmul(gain, innovation[:, :, None])[:, :, 0]
        new_cov = cov - np.matmul(gain, np.matmul(projected, np.swapaxes(gain, 1, 2)))
        return new_mean, new_cov

    # --- box conversions -----------------------------------------------------------------------------------------
    def measure(self, tlwh: np.ndarray) -> np.ndarray:
        """(k, 4) float32 top-left/width/height boxes -> measurements, in float32 as the reference computes them."""
        z = np.array(tlwh, dtype=np.float32)
        z[:, :2] += z[:, 2:] / 2
        if self.aspect:
            z[:, 2] /= z[:, 3]
        return z

    def boxes(self, mean: np.ndarray) -> np.ndarray:
        """(k, 8) states -> (k, 4) float64 x1, y1, x2, y2."""
        out = mean[:, :4].copy()
        if self.aspect:
            out[:, 2] *= out[:, 3]
        out[:, :2] -= out[:, 2:] / 2
        out[:, 2:] += out[:, :2]
        return out


XYAH = BoxKalman(aspect=True)
XYWH = BoxKalman(aspect=False)
