import pytest

from steerable.reward.metrics import auroc, expected_calibration_error


def test_auroc_hand_computed():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([0.5, 0.5], [0, 1]) == 0.5  # a tie counts half
    assert auroc([1, 2, 3], [0, 1, 1]) == 1.0
    assert auroc([0.2, 0.3], [1, 1]) != auroc([0.2, 0.3], [1, 1])  # nan: no negatives


def test_ece_hand_computed():
    assert expected_calibration_error([0.9, 0.9], [1, 0]) == pytest.approx(0.4)
    assert expected_calibration_error([0.05, 0.95], [0, 1]) == pytest.approx(0.05)
