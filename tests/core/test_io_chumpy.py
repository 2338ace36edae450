"""core.io: the opt-in chumpy path of the restricted unpickler (SMPL's official pickles) maps
``chumpy.ch.Ch`` to its stored array without importing chumpy, and still refuses everything else."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse

from tenfold.core.io import DataError, restricted_load


def _fake_chumpy_pickle(protocol: int, other_class: bool = False) -> bytes:
    """Pickle arrays through a fake ``chumpy.ch`` module, then remove it (as on a machine without chumpy)."""
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    name = "Select" if other_class else "Ch"

    class Ch:  # the layout chumpy's terminal objects pickle with: a __dict__ holding the array under 'x'
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__, Ch.__name__ = "chumpy.ch", name, name
    setattr(mod, name, Ch)
    pkg.ch = mod
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
    try:
        data = {"shapedirs": Ch(np.arange(24.0).reshape(2, 3, 4)), "v_template": np.ones((2, 3)),
                "J_regressor": scipy.sparse.csc_matrix(np.array([[0.5, 0.5], [0.0, 1.0]])),
                "nested": [Ch(np.zeros(2))]}
        return pickle.dumps(data, protocol=protocol)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_ch_becomes_its_array(tmp_path, protocol):
    p = tmp_path / "model.pkl"
    p.write_bytes(_fake_chumpy_pickle(protocol))
    assert "chumpy" not in sys.modules
    out = restricted_load(p, allow_chumpy=True)
    np.testing.assert_array_equal(out["shapedirs"], np.arange(24.0).reshape(2, 3, 4))
    assert isinstance(out["shapedirs"], np.ndarray) and isinstance(out["nested"][0], np.ndarray)
    assert isinstance(out["J_regressor"], np.ndarray)  # scipy sparse arrives dense (checked, never scipy's class)
    np.testing.assert_array_equal(out["J_regressor"], [[0.5, 0.5], [0.0, 1.0]])


def test_chumpy_refused_unless_allowed(tmp_path):
    p = tmp_path / "model.pkl"
    p.write_bytes(_fake_chumpy_pickle(2))
    with pytest.raises(DataError, match="chumpy"):
        restricted_load(p)


def test_other_chumpy_classes_refused_even_when_allowed(tmp_path):
    p = tmp_path / "model.pkl"
    p.write_bytes(_fake_chumpy_pickle(2, other_class=True))
    with pytest.raises(DataError, match=r"chumpy\.ch\.Select"):
        restricted_load(p, allow_chumpy=True)


@pytest.mark.parametrize("protocol", [0, 2])
@pytest.mark.parametrize("fmt", ["csc", "csr"])
def test_sparse_matrices_arrive_dense_and_are_checked(tmp_path, protocol, fmt):
    """scipy csc / csr matrices come back as the dense arrays they describe (duplicates summed, as scipy does), built
    by tenfold after checking their fields: a crafted file's out-of-range indices reached scipy's unchecked C++
    code (a segfault at index 1e8, silently wrong numbers at 24), and a huge declared shape could exhaust memory."""
    from tenfold.core.io import restricted_loads

    dense = np.array([[0.5, 0.0, 2.0], [0.0, 1.0, 0.0]])
    m = (scipy.sparse.csc_matrix if fmt == "csc" else scipy.sparse.csr_matrix)(dense)
    np.testing.assert_array_equal(restricted_loads(pickle.dumps({"J": m}, protocol=protocol))["J"], dense)
    dup = (scipy.sparse.csc_matrix if fmt == "csc" else scipy.sparse.csr_matrix)(
        (np.array([1.0, 2.0]), np.array([0, 0]), np.array([0, 2] + [2] * (dense.shape[1 if fmt == "csc" else 0] - 1))),
        shape=dense.shape)
    assert restricted_loads(pickle.dumps(dup, protocol=protocol))[0, 0] == 3.0
    for field, value in (("indices", 10 ** 8), ("indices", -1), ("indptr", 99)):
        bad = m.copy()
        getattr(bad, field)[-1] = value
        p = tmp_path / f"bad-{field}-{value}.pkl"
        p.write_bytes(pickle.dumps({"J": bad}, protocol=protocol))
        with pytest.raises(DataError, match="out-of-range"):
            restricted_load(p)
    one = (np.array([1.0]), (np.array([0]), np.array([0])))
    huge = (scipy.sparse.csc_matrix if fmt == "csc" else scipy.sparse.csr_matrix)(one, shape=(10 ** 5, 10 ** 5))
    with pytest.raises(DataError, match="out-of-range"):
        restricted_loads(pickle.dumps(huge, protocol=protocol))
