"""Search spaces: a grid of values and random ranges over any configuration key.

    --grid optimizer.lr=1e-3,3e-3,1e-2       values are TOML literals: 1e-3, true, "adam", [64, 64]
    --grid model.hidden=[64],[128,128]       commas inside brackets or quotes do not split
    --range optimizer.weight_decay=1e-6:1e-3:log   uniform in log space between the bounds
    --range model.dropout=0:0.5               uniform (an integer key draws integers)
    --grid model.layers.3.p=0.2,0.5           an argument of layer 3 of the model's list
    --range model.layers.0.out_features=16:256   (its type, int here, from the layer's class)

A ``model.layers.N.argument`` key names layer N of the base configuration's list (a model in the
``hidden = [...]`` shorthand: of its expansion, which the key turns into an explicit list); that
the layer exists and its class takes the argument is checked against the base configuration
before any trial runs (``bind``), so such keys cannot be searched together with the shorthand's
keys, which change the list.

The space becomes Optuna distributions (``Space.distributions``): a grid key is categorical, a
range a float (or int) distribution. How it is searched is the sampler's (``make_sampler``):

    grid     Optuna's GridSampler: every combination of the grid values once (trials: their count)
    random   RandomSampler: grid keys uniformly from their values, ranges from their interval
    tpe      TPESampler: the tree-structured Parzen estimator, random for its first 10 trials
    cmaes    CmaEsSampler: CMA-ES over the ranges (grid keys are drawn at random beside it)

A sampler is made again before each new trial, seeded by ``sample_seed`` and the trial's place
in the search (``slot``), so a sweep started again after a kill draws what it would have drawn.
Every point runs once per seed (``--seeds K``), which is why ``run.seed`` cannot be a search key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import math
import types
import typing
import warnings
from dataclasses import dataclass, field

import optuna

from .. import config as config_


@dataclass(frozen=True)
class Range:
    """A continuous (or integer) interval to draw a key from; ``log``: log-uniformly (Optuna's
    ``FloatDistribution``/``IntDistribution`` with ``log=True``)."""

    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def distribution(self):
        """The Optuna distribution of this range; an integer range keeps the integers inside it."""
        if not self.integer:
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)
        low, high = math.ceil(self.low), math.floor(self.high)
        if low > high:
            raise config_.ConfigError(f"--range {self.key}: no integer between {self.low:g} and {self.high:g}")
        return optuna.distributions.IntDistribution(low, high, log=self.log)


@dataclass
class Space:
    """What a sweep searches: grid keys with their values, and range keys."""

    grid: dict[str, list] = field(default_factory=dict)
    ranges: list[Range] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return list(self.grid) + [r.key for r in self.ranges]

    def size(self) -> int:
        """How many points the grid has (the product of its value counts; 1 for no key)."""
        return math.prod(len(v) for v in self.grid.values())

    def choices(self) -> dict[str, list]:
        """Each grid key's values as Optuna stores them: numbers, booleans and strings as they are,
        a list (``[64, 64]``) as its TOML literal, since a categorical choice must be a scalar."""
        return {k: [encode(v) for v in values] for k, values in self.grid.items()}

    def distributions(self) -> dict:
        """``{key: optuna distribution}``: a categorical one per grid key, a float or int one per range."""
        out = {k: optuna.distributions.CategoricalDistribution(c) for k, c in self.choices().items()}
        out.update({r.key: r.distribution() for r in self.ranges})
        return out

    def decode(self, params: dict) -> dict:
        """A point ``{key: value}`` in the order of ``keys`` from an Optuna trial's parameters."""
        choices = self.choices()
        return {k: self.grid[k][choices[k].index(params[k])] if k in self.grid else params[k] for k in self.keys}

    def corners(self) -> list[dict]:
        """The points checked before anything runs: every combination of the grid values (capped at
        10,000), and each range at both of its bounds with the grid's first values."""
        combos = itertools.islice(itertools.product(*self.grid.values()), 10_000)
        points = [dict(zip(self.grid, c)) for c in combos]
        first = dict(points[0]) if points else {}
        for r in self.ranges:
            dist = r.distribution()
            points += [{**first, r.key: dist.low}, {**first, r.key: dist.high}]
        return points

    def to_json(self) -> dict:
        return {"grid": self.grid, "ranges": [r.__dict__ for r in self.ranges]}


def encode(value):
    """A grid value as an Optuna categorical choice: scalars as they are, anything else as TOML."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return config_.toml_literal(value)


def split_values(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes: '[1,2],[3]' -> ['[1,2]', '[3]']."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    if depth != 0 or quote:
        raise config_.ConfigError(f"unbalanced brackets or quotes in {text!r}")
    return [p.strip() for p in parts]


def _split_key(spec: str, what: str) -> tuple[str, str]:
    if "=" not in spec:
        raise config_.ConfigError(f"{what} {spec!r} must look like section.key=...")
    key, text = spec.split("=", 1)
    key = key.strip()
    check_key(key)
    if key == "run.seed":  # apply() sets each trial's seed, so a searched seed would be overwritten
        raise config_.ConfigError(f"{what} run.seed: the seeds are not searched; use --seeds K to run every "
                                  "configuration with seeds run.seed, ..., run.seed + K - 1 "
                                  "(and --set run.seed=S for the first)")
    return key, text.strip()


def is_layer_key(dotted: str) -> bool:
    """Whether ``dotted`` sets an argument of one layer: model.layers.N.argument."""
    return dotted.startswith("model.layers.")


def check_key(dotted: str) -> None:
    """Refuse a search key that is neither a schema key nor of the form model.layers.N.argument."""
    if not is_layer_key(dotted):
        schema_key(dotted)
        return
    parts = dotted.split(".")
    if len(parts) < 4 or not parts[2].isdigit():
        raise config_.ConfigError(f"search key {dotted!r} must be model.layers.N.argument, e.g. model.layers.3.p")


def schema_key(dotted: str) -> config_.Key:
    """The schema entry of ``section.key``; ConfigError naming the closest key if unknown."""
    parts = dotted.split(".")
    if len(parts) != 2:
        raise config_.ConfigError(f"search key {dotted!r} must be section.key, e.g. optimizer.lr "
                                  "(or model.layers.N.argument)")
    section, name = parts
    if section not in config_.SCHEMA or name not in config_.SCHEMA[section]:
        known = [f"{s}.{n}" for s in config_.SCHEMA for n in config_.SCHEMA[s]]
        raise config_.ConfigError(f"unknown key {dotted}{config_._suggest(dotted, known)}")
    return config_.SCHEMA[section][name]


def parse_grid(spec: str) -> tuple[str, list]:
    """'optimizer.lr=1e-3,1e-2' -> ('optimizer.lr', [0.001, 0.01])."""
    key, text = _split_key(spec, "--grid")
    values = [config_.parse_value(v) for v in split_values(text) if v != ""]
    if not values:
        raise config_.ConfigError(f"--grid {key} has no values")
    return key, values


def parse_range(spec: str) -> Range:
    """'optimizer.lr=1e-4:1e-1:log' -> Range('optimizer.lr', 1e-4, 0.1, log=True)."""
    key, text = _split_key(spec, "--range")
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
        raise config_.ConfigError(f"--range {spec!r} must look like key=low:high or key=low:high:log")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise config_.ConfigError(f"--range {spec!r}: bounds must be numbers") from None
    log = len(parts) == 3 and parts[2] == "log"
    if not low < high or (log and low <= 0):
        raise config_.ConfigError(f"--range {key}: need low < high{' and low > 0 for log' if log else ''}, "
                                  f"got {low}:{high}")
    if is_layer_key(key):  # the layer's class says whether it is an integer: see bind
        return Range(key, low, high, log)
    entry = schema_key(key)
    if entry.type not in (int, float):
        raise config_.ConfigError(f"--range {key}: only numeric keys can take a range, {key} is {entry.type.__name__}")
    return Range(key, low, high, log, integer=entry.type is int)


def make_space(grid: list[str] = (), ranges: list[str] = ()) -> Space:
    """The space of ``--grid`` and ``--range`` specifications; a key given twice, or a value
    repeated in a grid (which would run one configuration twice), is refused."""
    g: dict[str, list] = {}
    for spec in grid:
        key, values = parse_grid(spec)
        if key in g:
            raise config_.ConfigError(f"--grid {key} given twice")
        if len({config_.toml_literal(v) for v in values}) < len(values):
            raise config_.ConfigError(f"--grid {key} repeats a value: {spec.split('=', 1)[1]}")
        g[key] = values
    rs = [parse_range(spec) for spec in ranges]
    dup = set(g) & {r.key for r in rs}
    if dup:
        raise config_.ConfigError(f"{sorted(dup)} given both as --grid and --range")
    if len({r.key for r in rs}) < len(rs):
        raise config_.ConfigError("a --range key is given twice")
    _refuse_layers_with_shorthand(list(g) + [r.key for r in rs])
    return Space(g, rs)


def _refuse_layers_with_shorthand(keys: list[str]) -> None:
    from ..shorthand import SHORTHAND_KEYS

    layer = [k for k in keys if is_layer_key(k)]
    shorthand = [k for k in keys if k.startswith("model.") and k.split(".")[1] in SHORTHAND_KEYS]
    if layer and shorthand:
        raise config_.ConfigError(f"{layer[0]} and {shorthand[0]} are both searched: model.layers.N is layer N of "
                                  f"the base configuration's list, which {shorthand[0]} would change; search "
                                  "model.layers.N arguments or the shorthand's keys, not both")


def bind(space: Space, cfg: dict) -> Space:
    """``space`` checked against the base configuration ``cfg``: every model.layers.N.argument key
    names a layer of its list and an argument of that layer's class; a range over such an
    argument draws integers when the class declares it an ``int``, and is refused unless numeric."""
    for key in space.grid:
        if is_layer_key(key):
            layer_argument(cfg, key, "--grid")
    ranges = []
    for r in space.ranges:
        if is_layer_key(r.key):
            cls, name, hint = layer_argument(cfg, r.key, "--range")
            number = _number_type(hint)
            if number is None:
                raise config_.ConfigError(f"--range {r.key}: only numeric arguments can take a range; {name} of "
                                          f"{cls.__name__} is {getattr(hint, '__name__', hint)}")
            r = dataclasses.replace(r, integer=number is int)
        ranges.append(r)
    return dataclasses.replace(space, ranges=ranges)


def layer_argument(cfg: dict, dotted: str, flag: str) -> tuple[type, str, object]:
    """(layer class, argument, its type hint) of model.layers.N[.table].argument in ``cfg``'s list;
    a one-line ConfigError naming ``flag`` and the key for a layer or an argument that is not there."""
    from ..nn.spec import SET_BY_RUN, layer_classes

    path = dotted.split(".")[2:]
    layers = cfg["model"]["layers"]
    index = int(path[0])
    if index >= len(layers):
        listing = ", ".join(f"{i} {spec['type']}" for i, spec in enumerate(layers))
        raise config_.ConfigError(f"{flag} {dotted}: model.layers has {len(layers)} layers ({listing}); "
                                  f"there is no layer {index}")
    table, where = layers[index], f"model.layers.{index}"
    for name in path[1:-1]:
        if not isinstance(table.get(name), dict):
            raise config_.ConfigError(f"{flag} {dotted}: {where} ({table['type']}) has no table {name!r}")
        table, where = table[name], f"{where}.{name}"
    cls, name = layer_classes().get(table.get("type")), path[-1]
    if cls is None:
        raise config_.ConfigError(f"{flag} {dotted}: {where} is not a layer table (no known 'type')")
    params = [n for n, p in inspect.signature(cls.__init__).parameters.items()
              if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if name in SET_BY_RUN:
        raise config_.ConfigError(f"{flag} {dotted}: {name} is set by the run ({SET_BY_RUN[name]}), not per layer")
    if name not in params:
        options = [n for n in params if n not in SET_BY_RUN]
        known = f"its arguments: {', '.join(options)}" if options else "it takes no arguments"
        raise config_.ConfigError(f"{flag} {dotted}: {where} is {cls.__name__}, which has no argument "
                                  f"{name!r}{config_._suggest(name, options)} ({known})")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):
        hints = {}
    return cls, name, hints.get(name)


def _number_type(hint) -> type | None:
    """int or float for a numeric type hint (``int | None`` included), else None."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if kinds == [int]:
        return int
    return float if float in kinds else None


def apply(cfg: dict, point: dict, seed: int) -> dict:
    """A validated copy of ``cfg`` with the point's keys set and ``run.seed`` = seed.

    All keys are set before one validation, so a point is judged as a whole and not through
    the states in between (optimizer.momentum given before optimizer.name = "sgd"). The
    model.layers.N keys go first: N is layer N of the base configuration's list.
    """
    keys = sorted(point, key=lambda k: not is_layer_key(k))
    overrides = [f"{k}={config_.toml_literal(point[k])}" for k in keys] + [f"run.seed={seed}"]
    return config_.resolve(config_.apply_overrides(cfg, overrides))


def label(point: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in point.items()) or "base"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, str)) else str(value)


def digest(obj) -> str:
    """A stable short hash of JSON-able data (a trial's identity, a sweep's default folder)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


SAMPLERS = ("grid", "random", "tpe", "cmaes")


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its ``study.stop()`` once the grid is exhausted (which works only
    inside ``study.optimize``): the sweep counts its trials itself."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(name: str, space: Space, sample_seed: int, slot: int):
    """The Optuna sampler ``name`` for the trial in place ``slot`` of the search (0, 1, ...)."""
    seed = (sample_seed * 1_000_003 + slot) % 2**32
    if name == "grid":
        return GridSampler(space.choices(), seed=sample_seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "cmaes":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # categorical keys: "falls back to the independent sampler"
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise config_.ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
