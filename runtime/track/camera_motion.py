"""Global motion compensation: the 2x3 affine warp of the camera between two consecutive frames.

BoT-SORT and TrackTrack warp their Kalman states by it before matching, so that a panning camera does not look like
every object moving at once. Four estimators, as in Ultralytics (frames downscaled by 2 first):

* ``sparseOptFlow`` (default): Shi-Tomasi corners, pyramidal Lucas-Kanade flow, RANSAC partial affine;
* ``orb`` / ``sift``: keypoints outside the detections, ratio-tested matches, outlier rejection, RANSAC;
* ``ecc``: OpenCV's ECC alignment, Euclidean motion.

The first frame (and any frame where the estimate fails) gives the identity.
"""

from __future__ import annotations

import cv2
import numpy as np

DOWNSCALE = 2


def identity() -> np.ndarray:
    return np.eye(2, 3)


class CameraMotion:
    """Estimates the warp from the previous frame to the current one; one instance per video."""

    def __init__(self, method: str | None):
        self.method = method
        self.reset()

    def reset(self) -> None:
        self._previous = None      # last grey, downscaled frame
        self._points = None        # its corners (optical flow) or keypoints (features)
        self._descriptors = None
        self._started = False

    def estimate(self, image: np.ndarray, detections_xyxy: np.ndarray | None = None) -> np.ndarray:
        """The (2, 3) float64 warp mapping the previous frame onto ``image`` (BGR or grey)."""
        if self.method is None:
            return identity()
        try:
            if self.method == "sparseOptFlow":
                return self._optical_flow(image)
            if self.method == "ecc":
                return self._ecc(image)
            return self._features(image, detections_xyxy)
        except cv2.error:
            return identity()

    @staticmethod
    def _grey(image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 and image.shape[2] == 3 else image

    @staticmethod
    def _upscale(warp: np.ndarray) -> np.ndarray:
        warp[:, 2] *= DOWNSCALE
        return warp

    def _optical_flow(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        frame = cv2.resize(self._grey(image), (width // DOWNSCALE, height // DOWNSCALE))
        corners = cv2.goodFeaturesToTrack(frame, mask=None, maxCorners=400, qualityLevel=0.01, minDistance=0,
                                          blockSize=3, useHarrisDetector=False, k=0.04)
        previous, previous_corners = self._previous, self._points
        self._previous, self._points = frame, corners
        if not self._started or previous_corners is None:
            self._started = True
            return identity()
        moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, frame, previous_corners, None)
        found = status.ravel().astype(bool)
        return self._fit(previous_corners[found], moved[found])

    def _fit(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """RANSAC partial affine (rotation, uniform scale, translation) from > 4 point pairs, else identity."""
        if before.shape[0] <= 4:
            return identity()
        warp = cv2.estimateAffinePartial2D(before, after, method=cv2.RANSAC)[0]
        return identity() if warp is None else self._upscale(warp)

    def _ecc(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        frame = cv2.GaussianBlur(self._grey(image), (3, 3), 1.5)
        frame = cv2.resize(frame, (width // DOWNSCALE, height // DOWNSCALE))
        previous, self._previous = self._previous, frame
        warp = np.eye(2, 3, dtype=np.float32)
        if not self._started:
            self._started = True
            return warp
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 5000, 1e-6)
        try:
            _, warp = cv2.findTransformECC(previous, frame, warp, cv2.MOTION_EUCLIDEAN, criteria, None, 1)
        except cv2.error:
            return np.eye(2, 3, dtype=np.float32)
        warp[:, 2] *= (width / frame.shape[1], height / frame.shape[0])
        return warp

    def _detector(self):
        if not hasattr(self, "_tools"):
            if self.method == "orb":
                self._tools = (cv2.FastFeatureDetector_create(20), cv2.ORB_create(), cv2.BFMatcher(cv2.NORM_HAMMING))
            else:
                sift = dict(nOctaveLayers=3, contrastThreshold=0.02, edgeThreshold=20)
                self._tools = (cv2.SIFT_create(**sift), cv2.SIFT_create(**sift), cv2.BFMatcher(cv2.NORM_L2))
        return self._tools

    def _features(self, image: np.ndarray, detections_xyxy: np.ndarray | None) -> np.ndarray:
        detector, extractor, matcher = self._detector()
        height, width = image.shape[:2]
        width, height = width // DOWNSCALE, height // DOWNSCALE
        frame = cv2.resize(self._grey(image), (width, height))
        mask = np.zeros_like(frame)
        mask[int(0.02 * height):int(0.98 * height), int(0.02 * width):int(0.98 * width)] = 255
        if detections_xyxy is not None:
            for box in detections_xyxy:
                x1, y1, x2, y2 = (np.asarray(box[:4]) / DOWNSCALE).astype(np.int_)
                mask[y1:y2, x1:x2] = 0
        keypoints, descriptors = extractor.compute(frame, detector.detect(frame, mask))
        previous_points, previous_descriptors = self._points, self._descriptors
        self._previous, self._points, self._descriptors = frame, keypoints, descriptors
        if not self._started:
            self._started = True
            return identity()
        if previous_descriptors is None or descriptors is None:
            return identity()
        before, after = [], []
        limit = 0.25 * np.array([width, height])
        for pair in matcher.knnMatch(previous_descriptors, descriptors, 2):
            if len(pair) < 2 or not pair[0].distance < 0.9 * pair[1].distance:
                continue
            p, q = previous_points[pair[0].queryIdx].pt, keypoints[pair[0].trainIdx].pt
            if abs(p[0] - q[0]) < limit[0] and abs(p[1] - q[1]) < limit[1]:
                before.append(p)
                after.append(q)
        if not before:
            return identity()
        before, after = np.asarray(before).reshape(-1, 2), np.asarray(after).reshape(-1, 2)
        shift = before - after  # displacement previous - current, as the outlier test measures it
        keep = (np.abs(shift - shift.mean(0)) <= 2.5 * shift.std(0)).all(axis=1)
        return self._fit(before[keep], after[keep])
