"""KAMA (Iqbal et al., arXiv 2104.13502): a body mesh from 26 3D keypoints by analytic articulation.

Our own SMPL-layout body model (linear blend skinning from the SMPL equations), a SYNTHETIC
procedural body for tests and the demo, the 26-keypoint regressor, the analytic fit with an optional
per-sample refinement, and an SMPLify-style optimisation baseline.
"""

from tenfold.kama.articulate import articulate, refine
from tenfold.kama.articulate import fit as fit_keypoints
from tenfold.kama.baseline import smplify
from tenfold.kama.body_model import BodyModel, load_body_model
from tenfold.kama.config import PRESETS, Config
from tenfold.kama.keypoints import KEYPOINT_NAMES, facing_backwards, regress_keypoints
from tenfold.kama.procedural import procedural_model
from tenfold.kama.verbs import build, bvh, demo, fit, smoke_options, synth

VERBS = {"synth": synth, "fit": fit, "bvh": bvh}

__all__ = ["KEYPOINT_NAMES", "PRESETS", "VERBS", "BodyModel", "Config", "articulate", "build", "demo",
           "facing_backwards", "fit_keypoints", "load_body_model", "procedural_model", "refine", "regress_keypoints",
           "smoke_options", "smplify"]
