"""The grader's machinery: load a student's file, run each check in isolation, compare, report.

A check is a function ``run(sub, rng)`` that builds inputs from ``rng``, calls the student's code
through ``sub`` and compares with tricklab's reference through :func:`expect_close`, which raises
:class:`CheckFailure` with the shapes, the largest absolute and relative error and the first
mismatching index with both values. A hint is given only when the student's output matches the
output of a known mistake (computed, not guessed from text): ``expect_close(got, want, what,
mistakes={"your running variance is the biased one ...": biased_var})``.

Each check runs in a child process (fork) with a time limit: an exception costs that check only
(its traceback trimmed to the student's file), and so does an infinite loop.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import multiprocessing as mp
import sys
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import TricklabError
from ..nn import _kernels

ALLOWED_TRICKLAB = {"tricklab.nn": {"Module", "Parameter"}, "tricklab.nn.module": {"Module"},
                    "tricklab.nn.parameter": {"Parameter"}}
RTOL, ATOL = 1e-7, 1e-9  # float64 throughout: a correct submission agrees to rounding


class SubmissionError(TricklabError, ValueError):
    """The submission cannot be graded: missing file, syntax error, forbidden import, missing class."""


class CheckFailure(AssertionError):
    """A check's verdict: what was compared and how it differs (and a hint if a known mistake matches)."""


# --------------------------------------------------------------------------- the submission
def forbidden_imports(source: str, path: str) -> list[str]:
    """Imports of tricklab beyond ``Module`` and ``Parameter`` (the reference implementations)."""
    bad = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            bad += [f"import {a.name}" for a in node.names if a.name == "tricklab" or a.name.startswith("tricklab.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tricklab":
            allowed = ALLOWED_TRICKLAB.get(node.module, set())
            bad += [f"from {node.module} import {a.name}" for a in node.names if a.name not in allowed]
    return bad


def load_submission(path: str | Path):
    """The student's file as a module; SubmissionError (one line) when it cannot be loaded."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path} does not exist")
    source = path.read_text()
    try:
        bad = forbidden_imports(source, str(path))
    except SyntaxError as exc:
        raise SubmissionError(f"{path}, line {exc.lineno}: syntax error: {exc.msg}") from None
    if bad:
        raise SubmissionError(f"{path}: '{bad[0]}' imports tricklab's reference implementation; a submission may "
                              "import numpy and tricklab.nn's Module and Parameter only")
    spec = importlib.util.spec_from_file_location(f"submission_{zlib.crc32(str(path.resolve()).encode())}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the student's module-level code: anything can happen there
        where = _student_frames(exc, path)
        raise SubmissionError(f"{path}: loading it raised {type(exc).__name__}: {exc}{where}") from None
    return module


@dataclass
class Submission:
    """The student's class (or function) and how the grader constructs it."""
    path: Path
    obj: object
    reference: object

    def make(self, *args, **kwargs):
        """The student's class built as the reference is: its required arguments, ``dtype=float64``,
        and ``rng=`` where the reference takes one (pass it in ``kwargs``)."""
        params = inspect.signature(self.reference).parameters
        if "dtype" in params:
            kwargs.setdefault("dtype", np.float64)
        if "rng" not in params:
            kwargs.pop("rng", None)
        return self.obj(*args, **kwargs)

    def ref(self, *args, **kwargs):
        """tricklab's reference built with the same arguments."""
        params = inspect.signature(self.reference).parameters
        if "dtype" in params:
            kwargs.setdefault("dtype", np.float64)
        if "rng" not in params:
            kwargs.pop("rng", None)
        return self.reference(*args, **kwargs)


# --------------------------------------------------------------------------- comparing
def _first_mismatch(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> tuple[int, ...]:
    bad = ~np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=False)
    return tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else ()


def matches(got, want, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Same shape and equal to float64 rounding."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=atol))


def expect_close(got, want, what: str, shapes: str = "", mistakes: dict[str, object] | None = None,
                 rtol: float = RTOL, atol: float = ATOL) -> None:
    """Raise CheckFailure unless ``got`` equals ``want`` to rounding; name the first mismatch, and
    add the hint of the first known mistake whose output ``got`` matches."""
    try:
        g = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailure(f"{what}: expected an array of shape {np.shape(want)}, got {type(got).__name__}") from None
    w = np.asarray(want, dtype=np.float64)
    inputs = f" (inputs: {shapes})" if shapes else ""
    hint = next((text for text, wrong in (mistakes or {}).items()
                 if wrong is not None and matches(g, wrong, rtol, atol)), None)
    hint = f"\n  hint: {hint}" if hint else ""
    if g.shape != w.shape:
        raise CheckFailure(f"{what}: shape {g.shape}, expected {w.shape}{inputs}{hint}")
    if not np.all(np.isfinite(g)) and np.all(np.isfinite(w)):
        raise CheckFailure(f"{what}: holds NaN or inf{inputs}{hint}")
    if np.allclose(g, w, rtol=rtol, atol=atol):
        return
    diff = np.abs(g - w)
    nonzero = np.abs(w) > atol  # a relative error means something only against a value that is not 0
    rel = f"{(diff[nonzero] / np.abs(w[nonzero])).max():.3g}" if nonzero.any() else "none (every expected value is 0)"
    index = _first_mismatch(g, w, rtol, atol)
    raise CheckFailure(f"{what} differs from the reference{inputs}: largest absolute error {diff.max():.3g}, "
                       f"largest relative error {rel}; first mismatch at index {list(index)}: "
                       f"yours {float(g[index]):.10g}, expected {float(w[index]):.10g}{hint}")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailure(message)


# --------------------------------------------------------------------------- checks and results
@dataclass(frozen=True)
class Check:
    """A named check worth ``points``; ``run(sub, rng)`` raises CheckFailure (or anything) to fail."""
    name: str
    points: int
    run: Callable[[Submission, np.random.Generator], None]
    description: str = ""


@dataclass(frozen=True)
class Assignment:
    """What a student implements (``reference``: tricklab's class or function of that name) and its checks."""
    name: str
    summary: str
    reference: object
    checks: tuple[Check, ...]
    kind: str = "module"  # "module" (a Module subclass), "optimizer" (a class with step/zero_grad) or "function"

    @property
    def target(self) -> str:
        return self.reference.__name__


@dataclass
class CheckResult:
    name: str
    points: int
    passed: bool
    output: str = ""

    @property
    def score(self) -> int:
        return self.points if self.passed else 0


@dataclass
class Result:
    """The grades of one submission on one assignment."""
    assignment: str
    path: str
    seed: int
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(c.score for c in self.checks)

    @property
    def max_score(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_gradescope(self) -> dict:
        """Gradescope's autograder results format."""
        return {"score": self.score, "max_score": self.max_score,
                "tests": [{"name": c.name, "score": c.score, "max_score": c.points, "output": c.output}
                          for c in self.checks]}

    def report(self) -> str:
        lines = [f"{self.assignment}: {self.path} (seed {self.seed})"]
        for c in self.checks:
            lines.append(f"  {'PASS' if c.passed else 'FAIL'}  {c.score:>2}/{c.points:<2} {c.name}")
            if not c.passed and c.output:
                lines += [f"        {line}" for line in c.output.splitlines()]
        lines.append(f"score: {self.score}/{self.max_score}")
        if not self.passed:
            lines.append(f"rerun exactly these inputs with --seed {self.seed}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- running in isolation
def _student_frames(exc: BaseException, path: Path) -> str:
    """The traceback's frames in the student's file, as ' (file, line N, in f: code)'."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return "".join(f"\n  at {path.name}, line {f.lineno}, in {f.name}: {f.line}" for f in frames[-3:])


def _run_one(check: Check, sub: Submission, seed: int, conn) -> None:
    try:
        # the references in NumPy: resolving the default in each forked check imports numba and
        # loads its compiled kernels anew, seconds per check (both agree to float64 rounding)
        _kernels.use("numpy")
        check.run(sub, np.random.default_rng([seed, zlib.crc32(check.name.encode())]))
        conn.send((True, ""))
    except CheckFailure as exc:
        conn.send((False, str(exc)))
    except Exception as exc:  # the student's code raised: this check is lost, the others run
        conn.send((False, f"{type(exc).__name__}: {exc}{_student_frames(exc, sub.path)}"))
    finally:
        conn.close()


def run_check(check: Check, sub: Submission, seed: int, timeout: float) -> CheckResult:
    """One check in a forked child with a time limit; its verdict, never the grader's crash."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_one, args=(check, sub, seed, child), daemon=True)
    proc.start()
    child.close()
    if parent.poll(timeout):
        try:
            passed, output = parent.recv()
        except EOFError:
            passed, output = False, "the check's process ended without a verdict (did the code call exit?)"
    else:
        passed, output = False, f"did not finish within {timeout:g} s (an infinite loop?)"
    proc.join(1)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return CheckResult(check.name, check.points, passed, output)


def grade(path: str | Path, assignment: str, class_name: str | None = None, seed: int = 0,
          timeout: float = 20.0) -> Result:
    """Grade the student's file ``path`` on ``assignment``; SubmissionError if it cannot be loaded."""
    from .assignments import find

    spec = find(assignment)
    module = load_submission(path)
    name = class_name or spec.target
    obj = getattr(module, name, None)
    if obj is None:
        defined = [n for n, v in vars(module).items() if inspect.isclass(v) or inspect.isfunction(v)]
        raise SubmissionError(f"{path} defines no {'function' if spec.kind == 'function' else 'class'} {name!r} "
                              f"(it defines {', '.join(defined) or 'nothing'}); name it {spec.target} or pass --class")
    if spec.kind != "function" and not inspect.isclass(obj):
        raise SubmissionError(f"{path}: {name} must be a class, got {type(obj).__name__}")
    return grade_object(obj, assignment, path=path, seed=seed, timeout=timeout)


def grade_object(obj, assignment: str, path: str | Path | None = None, seed: int = 0,
                 timeout: float = 20.0) -> Result:
    """Grade a class or function already in hand (tricklab's own reference, in the tests)."""
    from .assignments import find

    spec = find(assignment)
    path = Path(path) if path is not None else Path(inspect.getsourcefile(obj) or "<object>")
    sub = Submission(path, obj, spec.reference)
    result = Result(spec.name, str(path), seed)
    sys.stdout.flush()  # the forked checks must not repeat buffered output
    for check in spec.checks:
        result.checks.append(run_check(check, sub, seed, timeout))
    return result
