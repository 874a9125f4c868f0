"""The user's own .npz and CSV files, and their targets checked against the loss."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tricklab.data import (DataFileError, check_targets, describe_targets, load_csv, load_npz,
                           split_indices)
from tricklab.errors import TricklabError


def _rows(n: int, shape=(3,), seed=0) -> np.ndarray:
    """(n, *shape) float values whose rows are all different."""
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataFileError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TricklabError)
    return str(info.value)


# --- npz -----------------------------------------------------------------------------------------

def test_npz_with_test_split_keeps_the_arrays(tmp_path):
    x, y = np.arange(60, dtype=np.uint8).reshape(5, 3, 4), np.array([0, 1, 2, 1, 0], np.uint8)
    xt, yt = x[:2] + 100, y[:2]
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    data = load_npz(tmp_path / "d.npz")
    assert not data.test_held_out and data.note is None and data.columns is None
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_train, x)  # values kept, not rescaled
    np.testing.assert_array_equal(data.x_test, xt)
    np.testing.assert_array_equal(data.y_test, yt)


def test_npz_without_test_split_holds_out_a_seeded_split(tmp_path):
    x, y = _rows(100), np.linspace(0, 1, 100).astype(np.float64)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    data = load_npz(tmp_path / "d.npz", test_fraction=0.2, seed=3)
    assert data.test_held_out and len(data.x_train) == 80 and len(data.x_test) == 20
    assert data.y_train.dtype == np.float32
    assert str(tmp_path / "d.npz") in data.note and "20 of its 100" in data.note
    train, test = split_indices(100, val_size=20, seed=3)
    np.testing.assert_array_equal(data.x_test, x[test])
    np.testing.assert_array_equal(data.y_train, y[train].astype(np.float32))
    again = load_npz(tmp_path / "d.npz", test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    other = load_npz(tmp_path / "d.npz", test_fraction=0.2, seed=4)
    assert not np.array_equal(other.x_test, data.x_test)


@pytest.mark.parametrize("shape", [(7,), (6, 5), (2, 6, 5)])
def test_npz_keeps_the_sample_shape(tmp_path, shape):
    np.savez(tmp_path / "d.npz", x_train=_rows(10, shape), y_train=np.arange(10))
    data = load_npz(tmp_path / "d.npz", test_fraction=0.3)
    assert data.sample_shape == shape
    assert data.x_train.shape == (7, *shape) and data.x_test.shape == (3, *shape)


def test_npz_missing_file_is_named(tmp_path):
    message = _error(load_npz, tmp_path / "nope.npz")
    assert str(tmp_path / "nope.npz") in message and "no such file" in message


def test_npz_missing_array_is_named_with_a_suggestion(tmp_path):
    np.savez(tmp_path / "d.npz", X_train=_rows(4), y_train=np.arange(4))
    message = _error(load_npz, tmp_path / "d.npz")
    assert str(tmp_path / "d.npz") in message
    assert "no array 'x_train'" in message and "did you mean 'X_train'?" in message


def test_npz_test_inputs_without_test_targets_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=_rows(4), y_train=np.arange(4), x_test=_rows(2))
    assert "'x_test' without 'y_test'" in _error(load_npz, tmp_path / "d.npz")


def test_npz_object_array_is_refused_not_unpickled(tmp_path):
    ragged = np.empty(3, dtype=object)
    ragged[:] = [[1.0], [2.0, 3.0], [4.0]]
    np.savez(tmp_path / "d.npz", x_train=ragged, y_train=np.arange(3))
    message = _error(load_npz, tmp_path / "d.npz")
    assert str(tmp_path / "d.npz") in message and "'x_train'" in message
    assert "allow_pickle=False" in message


def test_npz_non_numeric_array_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=_rows(3), y_train=np.array(["cat", "dog", "cat"]))
    message = _error(load_npz, tmp_path / "d.npz")
    assert "'y_train'" in message and "<U3" in message


def test_npz_mismatched_lengths_name_both_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=_rows(100), y_train=np.arange(99))
    message = _error(load_npz, tmp_path / "d.npz")
    assert str(tmp_path / "d.npz") in message
    assert "'x_train' has 100 rows but 'y_train' has 99" in message


def test_npz_train_and_test_samples_must_have_one_shape(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=_rows(4, (3,)), y_train=np.arange(4),
             x_test=_rows(2, (4,)), y_test=np.arange(2))
    assert "same shape" in _error(load_npz, tmp_path / "d.npz")


def test_npz_non_finite_value_is_located(tmp_path):
    x = _rows(5)
    x[3, 1] = np.nan
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(5))
    message = _error(load_npz, tmp_path / "d.npz")
    assert "'x_train'" in message and "(3, 1)" in message
    np.savez(tmp_path / "big.npz", x_train=np.zeros((2, 2)), y_train=np.array([0.0, 1e39]))
    assert "'y_train' has the non-finite value inf at index (1,)" in _error(load_npz,
                                                                            tmp_path / "big.npz")


def test_npz_that_is_not_an_archive_is_refused(tmp_path):
    (tmp_path / "d.npz").write_text("a,b\n1,2\n")
    np.save(tmp_path / "one.npy", _rows(3))
    assert "not a NumPy .npz archive" in _error(load_npz, tmp_path / "d.npz")
    assert "single .npy array" in _error(load_npz, tmp_path / "one.npy")


def test_hold_out_needs_enough_rows_and_a_valid_fraction(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=_rows(2), y_train=np.arange(2))
    assert "too few" in _error(load_npz, tmp_path / "d.npz", test_fraction=0.1)
    with pytest.raises(ValueError, match="test_fraction"):
        load_npz(tmp_path / "d.npz", test_fraction=1.0)


# --- csv -----------------------------------------------------------------------------------------

def _csv(tmp_path, text: str, name="d.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_features_and_integer_target(tmp_path):
    path = _csv(tmp_path, "a,label,b\n1.5,0,2\n-3,2,4e1\n0,1,5\n")
    data = load_csv(path, "label", test_fraction=1 / 3)
    assert data.columns == ("a", "b") and data.sample_shape == (2,)
    x = np.vstack([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    assert x.dtype == np.float32 and y.dtype == np.int64
    order = np.argsort(x[:, 0])
    np.testing.assert_array_equal(x[order], [[-3, 40], [0, 5], [1.5, 2]])
    np.testing.assert_array_equal(y[order], [2, 1, 0])


def test_csv_float_target_and_several_targets(tmp_path):
    path = _csv(tmp_path, "a,t1,t2\n1,0.5,1\n2,1.0,2\n3,2,3\n4,7,4\n5,1,5\n")
    one = load_csv(path, "t1")
    assert one.y_train.dtype == np.float32 and one.y_train.shape == (4,)
    both = load_csv(path, ["t1", "t2"])
    assert both.columns == ("a",) and both.y_train.shape == (4, 2)
    np.testing.assert_array_equal(both.y_train[:, 1], both.x_train[:, 0])


def test_csv_quoted_fields_and_bom(tmp_path):
    text = '"width, cm","y"\n" 1.25",3\n"2","4"\n"3",5\n"4",6\n"5",7\n'
    path = _csv(tmp_path, text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    data = load_csv(path, "y", test_path=path)
    assert data.columns == ("width, cm",)
    np.testing.assert_array_equal(data.x_test[:, 0], [1.25, 2, 3, 4, 5])
    np.testing.assert_array_equal(data.y_test, [3, 4, 5, 6, 7])


def test_csv_non_numeric_value_names_column_and_line(tmp_path):
    path = _csv(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5,abc,0\n")
    message = _error(load_csv, path, "y")
    assert message.startswith(f"{path}, line 4, column 'b':") and "'abc' is not a number" in message


def test_csv_missing_value_names_column_and_line(tmp_path):
    path = _csv(tmp_path, "a,b,y\n1,2,0\n,4,1\n")
    assert _error(load_csv, path, "y") == f"{path}, line 3, column 'a': missing value"
    assert "line 2, column 'y'" in _error(load_csv, _csv(tmp_path, "a,y\n1, \n", "e.csv"), "y")
    assert "not a finite number" in _error(load_csv, _csv(tmp_path, "a,y\nnan,1\n", "n.csv"), "y")


def test_csv_line_numbers_count_blank_lines_and_multiline_quotes(tmp_path):
    path = _csv(tmp_path, 'a,"long\nname",y\n1,2,0\n\n3,x,1\n')
    assert f"{path}, line 5, column 'long\\nname':" in _error(load_csv, path, "y")


def test_csv_row_with_wrong_field_count_names_the_line(tmp_path):
    path = _csv(tmp_path, "a,b,y\n1,2,0\n3,4\n")
    assert f"{path}, line 3: 2 fields, but the header names 3 columns" == _error(load_csv, path, "y")


def test_csv_unknown_target_lists_columns_with_a_suggestion(tmp_path):
    path = _csv(tmp_path, "sepal,petal,label\n1,2,0\n3,4,1\n")
    message = _error(load_csv, path, "lable")
    assert str(path) in message and "'lable'" in message
    assert "did you mean 'label'?" in message and "sepal, petal, label" in message
    assert "did you mean 'label'?" in _error(load_csv, path, "LABEL")


def test_csv_missing_file_is_named(tmp_path):
    assert str(tmp_path / "nope.csv") in _error(load_csv, tmp_path / "nope.csv", "y")
    path = _csv(tmp_path, "a,y\n1,0\n")
    assert str(tmp_path / "t.csv") in _error(load_csv, path, "y", test_path=tmp_path / "t.csv")


def test_csv_test_file_columns_are_matched_by_name(tmp_path):
    train = _csv(tmp_path, "a,b,y\n1,2,0\n3,4,1\n")
    test = _csv(tmp_path, "y,b,a\n1,20,10\n0,40,30\n", "t.csv")
    data = load_csv(train, "y", test_path=test)
    assert not data.test_held_out and data.columns == ("a", "b")
    np.testing.assert_array_equal(data.x_train, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(data.x_test, [[10, 20], [30, 40]])
    np.testing.assert_array_equal(data.y_test, [1, 0])


def test_csv_test_file_with_other_columns_is_refused(tmp_path):
    train = _csv(tmp_path, "a,b,y\n1,2,0\n")
    test = _csv(tmp_path, "a,c,y\n1,2,0\n", "t.csv")
    message = _error(load_csv, train, "y", test_path=test)
    assert str(test) in message and "missing ['b'], extra ['c']" in message
    no_target = _csv(tmp_path, "a,b\n1,2\n", "u.csv")
    assert "no target column 'y'" in _error(load_csv, train, "y", test_path=no_target)


def test_csv_header_problems(tmp_path):
    assert "empty file" in _error(load_csv, _csv(tmp_path, ""), "y")
    assert "no data rows" in _error(load_csv, _csv(tmp_path, "a,y\n", "h.csv"), "y")
    assert "'a' appears twice" in _error(load_csv, _csv(tmp_path, "a,a,y\n1,2,3\n", "t.csv"), "y")
    assert "no feature columns" in _error(load_csv, _csv(tmp_path, "y\n1\n", "o.csv"), "y")


# --- targets -------------------------------------------------------------------------------------

@pytest.mark.parametrize("y, expected", [
    (np.array([0, 3, 1]), ("classes", 4)),
    (np.array([2.0, 0.0, 1.0], np.float32), ("classes", 3)),
    (np.array([0.5, 1.0]), ("regression", 1)),
    (np.array([-1, 2]), ("regression", 1)),
    (np.zeros((5, 3), np.int64), ("regression", 3)),
])
def test_describe_targets(y, expected):
    assert describe_targets(y) == expected


def test_cross_entropy_needs_integer_class_labels():
    y = check_targets(np.array([0.0, 2.0, 1.0]), "cross_entropy", "d.npz")
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 1]
    message = _error(check_targets, np.array([0.0, 1.5]), "cross_entropy", "d.npz")
    assert message.startswith("d.npz: y_train") and "1.5 at row 1" in message
    assert "negative label -1 at row 2" in _error(check_targets, np.array([0, 1, -1]),
                                                   "cross_entropy", "d.csv")
    assert "shape (3, 2)" in _error(check_targets, np.zeros((3, 2), np.int64), "cross_entropy", "f")


def test_mse_accepts_integer_targets_as_float():
    y = check_targets(np.array([[1, 2], [3, 4]]), "mse", "d.csv", name="y_test")
    assert y.dtype == np.float32 and y.tolist() == [[1, 2], [3, 4]]
    assert check_targets(np.array([0.25]), "mse", "d.csv").dtype == np.float32
    message = _error(check_targets, np.zeros((2, 2, 2)), "mse", "d.npz", name="y_test")
    assert message.startswith("d.npz: y_test has shape (2, 2, 2)")


def test_bce_with_logits_needs_zeros_and_ones():
    y = check_targets(np.array([[0, 1], [1, 1]], np.uint8), "bce_with_logits", "d.npz")
    assert y.dtype == np.float32 and y.tolist() == [[0, 1], [1, 1]]
    message = _error(check_targets, np.array([[0.0, 1.0], [0.5, 1.0]]), "bce_with_logits", "d.npz")
    assert "0.5 at index (1, 0)" in message and "0 or 1" in message


def test_unknown_loss_gets_a_suggestion():
    with pytest.raises(ValueError, match=re.escape("did you mean 'cross_entropy'?")):
        check_targets(np.arange(3), "crossentropy", "d.npz")
