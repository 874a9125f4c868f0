"""Grade a student's own implementation of a layer, an optimizer or a trick against tricklab's reference.

    result = tricklab.grade.grade("batchnorm.py", "batchnorm")    # -> Result
    print(result.report()); result.to_gradescope()

From the shell: ``tricklab grade FILE --assignment NAME [--class NAME] [--json results.json] [--seed S]``,
``tricklab grade --list``, ``tricklab assignment new NAME DIR`` (the starter file to hand out).
"""

from .core import Assignment, Check, CheckFailure, CheckResult, Result, SubmissionError, grade

__all__ = ["grade", "Result", "CheckResult", "Assignment", "Check", "CheckFailure", "SubmissionError"]
