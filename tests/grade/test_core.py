"""The grader's machinery beyond what tests/grade/test_linear.py covers."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from tricklab import nn
from tricklab.grade.core import Check, CheckFailure, Submission, expect_close, run_check
from tricklab.nn import _kernels


def _report_kernels(sub, rng):
    raise CheckFailure(_kernels.backend())


def test_a_check_runs_tricklabs_numpy_kernels_and_leaves_the_graders_choice_alone():
    # a forked check that resolved the default would import numba and load its compiled kernels anew
    before = _kernels.BACKEND
    result = run_check(Check("kernels", 1, _report_kernels), Submission(Path("relu.py"), nn.ReLU, nn.ReLU),
                       seed=0, timeout=60)
    assert result.output == "numpy"
    assert _kernels.BACKEND == before


def test_a_mismatch_against_an_exact_zero_reports_no_relative_error_and_no_warning():
    # ReLU's output and a saturated sigmoid's derivative are exactly 0: no relative error is defined there
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckFailure, match="largest relative error none .every expected value is 0.; "
                                               "first mismatch at index \\[1\\]"):
            expect_close(np.array([0.0, 5.0]), np.array([0.0, 0.0]), "forward output y")
        with pytest.raises(CheckFailure, match="largest relative error 0.5;"):  # only where expected != 0
            expect_close(np.array([3.0, 5.0]), np.array([2.0, 0.0]), "forward output y")
