"""``tricklab assignment new NAME DIR``: the starter file a teacher hands out, and the student's README.

The skeleton copies the reference's signature and its docstring (the equations to implement);
every body raises NotImplementedError, so the starter loads and scores 0 without crashing.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

from ..errors import TricklabError
from .assignments import find


def _docstring(obj, indent: str) -> str:
    doc = inspect.getdoc(obj) or obj.__name__
    return textwrap.indent(f'"""{doc}\n"""', indent)


def _init_signature(cls) -> str:
    return _signature(cls, "__init__")


def _signature(cls, method: str) -> str:
    """The reference's own arguments: a loss's forward takes (pred, target), its backward no gradient."""
    return str(inspect.signature(getattr(cls, method))).replace("'", '"')


def _module_skeleton(cls) -> str:
    return f'''class {cls.__name__}(Module):
{_docstring(cls, "    ")}

    def __init__{_init_signature(cls)}:
        super().__init__(dtype=dtype)
        # keep the arguments; create the parameters (Parameter) and buffers, if the layer has any

    def forward{_signature(cls, "forward")}:
        """Compute the output and keep what backward needs."""
        raise NotImplementedError

    def backward{_signature(cls, "backward")}:
        """Return dLoss/dx; add each parameter's gradient into its .grad."""
        raise NotImplementedError
'''


def _optimizer_skeleton(cls) -> str:
    return f'''class {cls.__name__}:
{_docstring(cls, "    ")}

    def __init__{_init_signature(cls)}:
        raise NotImplementedError("keep the parameters (a list of Parameter) and the hyperparameters")

    def zero_grad(self):
        """Set every parameter's .grad to zero."""
        raise NotImplementedError

    def step(self):
        """Update every parameter from its .grad (and the optimizer's state)."""
        raise NotImplementedError
'''


def _function_skeleton(fn) -> str:
    sig = str(inspect.signature(fn)).replace("'", '"')
    return f'''def {fn.__name__}{sig}:
{_docstring(fn, "    ")}
    raise NotImplementedError
'''


def starter_source(name: str) -> str:
    """The starter file of assignment ``name``."""
    spec = find(name)
    body = {"module": _module_skeleton, "optimizer": _optimizer_skeleton, "function": _function_skeleton}[spec.kind]
    checks = "\n".join(f"    - {c.name} ({c.points} point{'s' if c.points != 1 else ''})" for c in spec.checks)
    return f'''"""Assignment {spec.name}: {spec.summary}.

Implement {spec.target} below with NumPy. You may import numpy and tricklab.nn's Module and Parameter;
nothing else of tricklab. Grade it with:

    tricklab grade {spec.target.lower()}.py --assignment {spec.name}

The checks:
{checks}
"""

from __future__ import annotations

import numpy as np

from tricklab.nn import Module, Parameter


{body(spec.reference)}'''


def write_starter(name: str, folder: str | Path) -> list[Path]:
    """Write the starter file and a README for the student into ``folder``; returns the paths."""
    spec = find(name)
    folder = Path(folder)
    path = folder / f"{spec.target.lower()}.py"
    if path.exists():
        raise TricklabError(f"{path} exists; choose another folder (the starter never overwrites a student's work)")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(starter_source(name))
    readme = folder / "README.md"
    readme.write_text(f"""# Assignment: {spec.name}

{spec.summary}.

Open `{path.name}`, implement every method marked `NotImplementedError` (the docstring gives the
equations), then grade your work:

```bash
tricklab grade {path.name} --assignment {spec.name}
```

Every check prints what it compared and, when it fails, the inputs' shapes, the largest error and
the first index where your result differs, with a hint when the mistake is a known one. The same
`--seed` reruns exactly the inputs that failed.
""")
    return [path, readme]
