"""The structure report's damage numbers (twin/kinds/structure/report.py): the node grid from the extent, the nodes a
gauge sees, and the damaged patch's posterior mean and sd ratio against the truth, on tiny hand-made fields."""

from __future__ import annotations

import numpy as np
import pytest

from twin.kinds.structure.report import damage_summary, gauge_nodes, node_shape

#: the flagship mast: 4 x 32 Q1 elements on 0.25 m x 8 m, 5 x 33 nodes
EXTENT = ((0.0, 0.25), (0.0, 8.0))


def test_node_shape_of_the_flagship_mast():
    # from the decision record's nodes (nx, ny); the extent's aspect alone guessed 55 x 3 for this mast (its
    # elements are 4 times taller than wide) and drew the damage panels scrambled
    assert node_shape(5 * 33, EXTENT, [5, 33]) == (33, 5)
    assert node_shape(9 * 65, EXTENT, [9, 65]) == (65, 9)
    assert node_shape(11 * 11, ((0, 1), (0, 1))) == (11, 11)        # old records, square elements


def test_a_gauge_sees_the_corners_of_the_element_it_reads():
    from twin.kinds.structure.gauges import strain_gauge_matrix

    shape = (33, 5)
    # inside element (col 0, row 2): its 4 corners
    seen = gauge_nodes(shape, EXTENT, [[0.02, 0.6]]).reshape(shape)
    assert sorted(zip(*np.nonzero(seen))) == [(2, 0), (2, 1), (3, 0), (3, 1)]
    # on the edge between element rows 5 and 6 (y = 1.5 m, the flagship's gauges 2 and 3) and on the top and right
    # edges: the element the strain-gauge operator reads, whose displacement columns are those of the seen nodes
    for point in ([0.02, 1.5], [0.23, 1.5], [0.25, 8.0], [0.0, 0.0]):
        seen = gauge_nodes(shape, EXTENT, [point])
        assert seen.sum() == 4
        H = strain_gauge_matrix(_FakeGrid(), [point], [np.pi / 2])
        read = np.zeros(33 * 5, dtype=bool)
        read[np.unique(H.indices // 2)] = True
        assert np.array_equal(seen, read), point
    assert not gauge_nodes(shape, EXTENT, np.zeros((0, 2))).any()


class _FakeGrid:
    """The flagship mast's node grid as strain_gauge_matrix reads it (nodes 5 x 33, dof 2, natural order)."""
    shape, spacing, extent, dof, size, dim = (5, 33), (0.0625, 0.25), EXTENT, 2, 5 * 33, 2

    def contains(self, points):
        return np.ones(len(points), dtype=bool)


def _fields(truth, prior_mean, post_mean, prior_sd, post_sd):
    return {k: np.asarray(v, dtype=float) for k, v in dict(truth=truth, prior_mean=prior_mean,
                                                           posterior_mean=post_mean, prior_sd=prior_sd,
                                                           posterior_sd=post_sd).items()}


def test_patch_mean_and_sd_ratio():
    truth = [0.0, 0.45, 0.45, 0.2, 0.0]           # patch: d >= 0.225, nodes 1 and 2
    f = _fields(truth, [0.1] * 5, [0.05, 0.40, 0.30, 0.2, 0.05], [0.08] * 5, [0.02, 0.04, 0.10, 0.05, 0.08])
    seen = np.array([False, True, False, True, False])
    s = damage_summary(f, seen)
    assert s["patch_nodes"] == 2
    assert s["patch_truth"] == pytest.approx(0.45)
    assert s["patch_posterior"] == pytest.approx(0.35) and s["patch_prior"] == pytest.approx(0.1)
    assert s["patch_ratio"] == pytest.approx(0.35 / 0.45)
    assert s["sd_ratio_patch_seen"] == pytest.approx(0.04 / 0.08)           # node 1 only
    assert s["sd_ratio_seen"] == pytest.approx((0.04 + 0.05) / 2 / 0.08)   # nodes 1 and 3
    # the gauges see none of the patch: no ratio there, not a made-up one
    s = damage_summary(f, np.array([True, False, False, False, False]))
    assert np.isnan(s["sd_ratio_patch_seen"]) and s["sd_ratio_seen"] == pytest.approx(0.25)


def test_without_truth_only_the_sd_ratio():
    f = _fields([0.0] * 3, [0.1] * 3, [0.1] * 3, [0.1] * 3, [0.2] * 3)
    f["truth"] = None
    assert damage_summary(f, np.ones(3, dtype=bool)) == {"sd_ratio_seen": pytest.approx(2.0)}
    f["truth"] = np.zeros(3)                      # a sound truth has no patch
    assert set(damage_summary(f, np.ones(3, dtype=bool))) == {"sd_ratio_seen"}


def test_the_verdicts_patch_sentence_with_and_without_gauges_that_see_it():
    from twin.kinds.structure.report import patch_sentence

    seen = {"patch_posterior": 0.38, "patch_truth": 0.45, "sd_ratio_patch_seen": 0.52}
    assert patch_sentence(seen) == ("damaged patch: posterior mean d 0.38 against a true 0.45, its sd 0.52 x the "
                                    "prior's where the gauges see it")
    unseen = patch_sentence(dict(seen, sd_ratio_patch_seen=float("nan")))
    assert "nan" not in unseen and "seen by none of the assimilated gauges" in unseen
