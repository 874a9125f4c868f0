"""Search spaces: a grid of values and random ranges over any configuration key.

    --grid optimizer.lr=1e-3,3e-3,1e-2       values are TOML literals: 1e-3, true, "adam", [64, 64]
    --grid model.hidden=[64],[128,128]       commas inside brackets or quotes do not split
    --range optimizer.weight_decay=1e-6:1e-3:log   uniform in log space between the bounds
    --range model.dropout=0:0.5               uniform (an integer key draws integers)

Without ``--random`` the grid is expanded in full (the Cartesian product, in the order the keys
were given). With ``--random N`` N points are drawn, each grid key uniformly from its values and
each range key from its range, from a generator seeded by ``sample_seed`` so that the same
command draws the same points. Every point runs once per seed (``--seeds K``), which is why
``run.seed`` cannot be a search key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field

import numpy as np

from .. import config as config_


@dataclass(frozen=True)
class Range:
    """A continuous (or integer) interval to sample a key from; ``log`` samples log-uniformly."""

    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def sample(self, rng: np.random.Generator):
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return int(round(value)) if self.integer else float(value)


@dataclass
class Space:
    """What a sweep searches: grid keys with their values, range keys, and how many random points."""

    grid: dict[str, list] = field(default_factory=dict)
    ranges: list[Range] = field(default_factory=list)
    random: int = 0
    sample_seed: int = 0

    @property
    def keys(self) -> list[str]:
        return list(self.grid) + [r.key for r in self.ranges]

    def points(self) -> list[dict]:
        """The configurations to try, each a dict ``{section.key: value}``."""
        if self.ranges and not self.random:
            raise config_.ConfigError("--range needs --random N (how many points to draw)")
        if not self.random:
            if not self.grid:
                return [{}]
            keys = list(self.grid)
            return [dict(zip(keys, combo)) for combo in itertools.product(*self.grid.values())]
        rng = np.random.default_rng(self.sample_seed)
        out = []
        for _ in range(self.random):
            point = {k: values[int(rng.integers(len(values)))] for k, values in self.grid.items()}
            point.update({r.key: r.sample(rng) for r in self.ranges})
            out.append(point)
        return out

    def to_json(self) -> dict:
        return {"grid": self.grid, "ranges": [r.__dict__ for r in self.ranges], "random": self.random,
                "sample_seed": self.sample_seed}


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
    schema_key(key)
    if key == "run.seed":  # apply() sets each trial's seed, so a searched seed would be overwritten
        raise config_.ConfigError(f"{what} run.seed: the seeds are not searched; use --seeds K to run every "
                                  "configuration with seeds run.seed, ..., run.seed + K - 1 "
                                  "(and --set run.seed=S for the first)")
    return key, text.strip()


def schema_key(dotted: str) -> config_.Key:
    """The schema entry of ``section.key``; ConfigError naming the closest key if unknown."""
    parts = dotted.split(".")
    if len(parts) != 2:
        raise config_.ConfigError(f"search key {dotted!r} must be section.key, e.g. optimizer.lr")
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
    entry = schema_key(key)
    if entry.type not in (int, float):
        raise config_.ConfigError(f"--range {key}: only numeric keys can take a range, {key} is {entry.type.__name__}")
    return Range(key, low, high, log, integer=entry.type is int)


def make_space(grid: list[str] = (), ranges: list[str] = (), random: int = 0, sample_seed: int = 0) -> Space:
    g: dict[str, list] = {}
    for spec in grid:
        key, values = parse_grid(spec)
        if key in g:
            raise config_.ConfigError(f"--grid {key} given twice")
        g[key] = values
    rs = [parse_range(spec) for spec in ranges]
    dup = set(g) & {r.key for r in rs}
    if dup:
        raise config_.ConfigError(f"{sorted(dup)} given both as --grid and --range")
    if random < 0:
        raise config_.ConfigError(f"--random must be >= 0, got {random}")
    return Space(g, rs, random, sample_seed)


def apply(cfg: dict, point: dict, seed: int) -> dict:
    """A validated copy of ``cfg`` with the point's keys set and ``run.seed`` = seed."""
    out = cfg
    for key, value in point.items():
        out = config_.set_key(out, key, value)
    return config_.set_key(out, "run.seed", seed)


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
