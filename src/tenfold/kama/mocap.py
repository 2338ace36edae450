"""BVH mocap -> KAMA keypoints: map a CMU-style skeleton to the 17 of the 26 keypoints it has (spec 6)."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from tenfold.core.data import load_bvh
from tenfold.core.io import ConfigError, DataError
from tenfold.kama.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS

__all__ = ["CMU_MAP", "bvh_keypoints"]

#: keypoint name -> BVH joint name (CMU naming; ``_End`` = end site). Nose, eyes, ears, heels and small
#: toes have no counterpart: confidence 0. So has the neck: CMU's "Neck" joint sits at shoulder height, on the line
#: between the shoulders (SMPL's neck joint is well above it), and turns with CMU's lowerneck; as the neck keypoint it
#: made the three-point spine fit read neck bending as upper-spine bending (joint 9 was 26.1 deg off the BVH's Chest2
#: on average over the walk, 4.2 without it: benchmarks/kama.py, results/kama.json). The shoulders and the torso fix
#: the spine instead.
CMU_MAP: dict[str, str] = {
    "pelvis": "Hips", "left_hip": "LeftHip", "right_hip": "RightHip", "torso": "Chest",
    "left_knee": "LeftKnee", "right_knee": "RightKnee", "left_ankle": "LeftAnkle", "right_ankle": "RightAnkle",
    "left_big_toe": "LeftToe_End", "right_big_toe": "RightToe_End",
    "left_shoulder": "LeftShoulder", "right_shoulder": "RightShoulder", "left_elbow": "LeftElbow",
    "right_elbow": "RightElbow", "left_wrist": "LeftWrist", "right_wrist": "RightWrist",
}


def bvh_keypoints(path: str | os.PathLike, fps: float = 30.0, max_frames: int = 0,
                  mapping: dict[str, str] | None = None, scale: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Keypoints (F, 26, 3) in metres (the file's units times ``scale``: 0.01 for centimetres, 0.0254 for inches),
    confidence (F, 26) (1 where mapped), and the frame rate actually used (the file's rate divided by a whole step).
    ``fps`` 0 keeps every frame, ``max_frames`` 0 keeps them all; ``mapping``: keypoint name -> BVH joint name
    (default :data:`CMU_MAP`)."""
    if not (math.isfinite(fps) and fps >= 0) or max_frames < 0:
        raise ConfigError(f"fps must be finite and >= 0 (0: the file's rate) and max_frames >= 0 (0: all), "
                          f"got {fps}, {max_frames}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be finite and > 0 (metres per file unit), got {scale}")
    mp = mapping or CMU_MAP
    unknown = [k for k in mp if k not in KEYPOINT_NAMES]
    if unknown or not all(isinstance(v, str) for v in mp.values()):
        raise ConfigError(f"a BVH mapping takes keypoint names ({', '.join(KEYPOINT_NAMES)}) to joint names; got "
                          f"{', '.join(map(repr, unknown)) or 'a value that is not a joint name'}")
    mot = load_bvh(path, include_end_sites=True)
    missing = [j for j in mp.values() if j not in mot.joint_names]
    if missing:
        raise DataError(f"BVH {path} lacks joints {', '.join(missing)}; pass a mapping for this skeleton "
                        f"(CLI: --mapping FILE.json, {{keypoint name: joint name}}; its joints: "
                        f"{', '.join(mot.joint_names[:12])}{', ...' if len(mot.joint_names) > 12 else ''})")
    step = max(1, round(mot.fps / fps)) if fps > 0 else 1
    pos = mot.positions()[::step]                                # (F, J, 3)
    if max_frames > 0:
        pos = pos[:max_frames]
    kp = np.zeros((pos.shape[0], NUM_KEYPOINTS, 3))
    conf = np.zeros((pos.shape[0], NUM_KEYPOINTS))
    for name, joint in mp.items():
        k = KEYPOINT_NAMES.index(name)
        kp[:, k] = pos[:, mot.joint_names.index(joint)]
        conf[:, k] = 1.0
    return (torch.as_tensor(kp * scale, dtype=torch.float32), torch.as_tensor(conf, dtype=torch.float32),
            mot.fps / step)
