"""The search space of a sweep: a small typed grammar over recipe keys, checked before any trial.

A space file maps recipe keys (dotted, as ``--set`` takes them) to one sampler each::

    optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
    optim.weight_decay: {uniform: [0.0, 0.1]}
    train.epochs: {choice: [2, 3]}
    mode: {grid: [linear, full]}

Samplers: ``uniform``, ``loguniform`` (low, high), ``quniform``/``qloguniform`` (low, high, q),
``randint`` (low, high; high excluded), ``choice`` and ``grid`` (a list of values; ``grid``
tries every value in every repetition). Each maps to its ``ray.tune`` search space. A key the
recipe does not have, a sampler that does not exist, or a value the recipe would reject (checked
at the ends of every range and at every listed value) is an error that names the key.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from hypernym.config import apply_overrides, parse_recipe
from hypernym.errors import HypernymError

__all__ = ["SAMPLERS", "load_space", "parse_space", "to_tune", "with_values"]

# sampler -> (number of arguments, or None for a list of values)
SAMPLERS: dict[str, int | None] = {
    "uniform": 2, "loguniform": 2, "quniform": 3, "qloguniform": 3, "randint": 2,
    "choice": None, "grid": None,
}
_FORM = ("{SAMPLER: ARGS}, e.g. {loguniform: [1.0e-4, 1.0e-2]} or {choice: [2, 3]}; samplers: "
         + ", ".join(SAMPLERS))


def load_space(path: str | Path, recipe_raw: dict[str, Any]) -> dict[str, tuple[str, list]]:
    """Read and check a space file against a raw recipe mapping (see ``parse_space``)."""
    path = Path(path)
    if not path.is_file():
        raise HypernymError(f"space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HypernymError(f"{path}: not valid YAML: {exc}") from None
    return parse_space(raw, recipe_raw, source=str(path))


def parse_space(raw: Any, recipe_raw: dict[str, Any], *,
                source: str = "space") -> dict[str, tuple[str, list]]:
    """Check a space mapping: ``{key: (sampler, args)}``, every key a recipe key and every value
    one the recipe accepts.

    Raises:
        HypernymError: naming the key, what was wrong and what is allowed.
    """
    if not isinstance(raw, dict) or not raw:
        raise HypernymError(f"{source}: a search space maps recipe keys to samplers ({_FORM})")
    recipe = parse_recipe(recipe_raw, source="the recipe")
    out: dict[str, tuple[str, list]] = {}
    for key, spec in raw.items():
        where = f"{source}: {key}"
        _check_key(str(key), type(recipe), where)
        if not (isinstance(spec, dict) and len(spec) == 1):
            raise HypernymError(f"{where}: expected {_FORM}; got {spec!r}")
        sampler, args = next(iter(spec.items()))
        if sampler not in SAMPLERS:
            close = difflib.get_close_matches(str(sampler), SAMPLERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise HypernymError(f"{where}: unknown sampler {sampler!r}{hint}; samplers: "
                                f"{', '.join(SAMPLERS)}")
        args = _check_args(sampler, args, where)
        for value in _probes(sampler, args):  # the recipe must accept every corner
            try:
                parse_recipe(with_values(recipe_raw, {key: value}), source="the recipe")
            except HypernymError as exc:
                raise HypernymError(f"{where}: the recipe rejects {key}={value!r}:\n"
                                    f"{exc}") from None
        out[str(key)] = (sampler, args)
    return out


def to_tune(space: dict[str, tuple[str, list]]) -> dict[str, Any]:
    """The checked space as ``ray.tune`` search spaces, keyed by the dotted recipe key."""
    from ray import tune

    make = {"uniform": tune.uniform, "loguniform": tune.loguniform, "quniform": tune.quniform,
            "qloguniform": tune.qloguniform, "randint": tune.randint}
    out: dict[str, Any] = {}
    for key, (sampler, args) in space.items():
        if sampler == "choice":
            out[key] = tune.choice(args)
        elif sampler == "grid":
            out[key] = tune.grid_search(args)
        else:
            out[key] = make[sampler](*args)
    return out


def with_values(recipe_raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The raw recipe with dotted ``key: value`` pairs set (as ``--set`` would)."""
    return apply_overrides(recipe_raw, [f"{k}={json.dumps(_plain(v))}" for k, v in values.items()])


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars from Tune


def _check_key(key: str, model: type[BaseModel], where: str) -> None:
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f" (did you mean {'.'.join([*parts[:depth], close[0]])!r}?)" if close else ""
            raise HypernymError(f"{where}: the recipe has no key {'.'.join(parts[:depth + 1])!r}"
                                f"{hint}; allowed there: {', '.join(fields)}")
        if part in ("kind", "name", "experiment"):
            raise HypernymError(f"{where}: {part!r} is the sweep's own, not a hyperparameter")
        ann = fields[part].annotation
        if depth < len(parts) - 1:
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                raise HypernymError(f"{where}: {'.'.join(parts[:depth + 1])!r} is a value, not "
                                    "a section")
            model = ann
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            raise HypernymError(f"{where}: {key!r} is a section; sweep one of its keys: "
                                f"{', '.join(ann.model_fields)}")


def _check_args(sampler: str, args: Any, where: str) -> list:
    count = SAMPLERS[sampler]
    if not isinstance(args, list) or not args:
        raise HypernymError(f"{where}: {sampler} takes a list, got {args!r}")
    if count is None:
        return args
    if len(args) != count or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                     for a in args):
        names = "low, high" + (", q" if count == 3 else "")
        raise HypernymError(f"{where}: {sampler} takes [{names}] as numbers, got {args!r}")
    low, high = args[0], args[1]
    if not low < high:
        raise HypernymError(f"{where}: {sampler} needs low < high, got {args!r}")
    if sampler.endswith("loguniform") and low <= 0:
        raise HypernymError(f"{where}: {sampler} needs low > 0, got {args!r}")
    if sampler == "randint" and not all(isinstance(a, int) for a in args):
        raise HypernymError(f"{where}: randint takes integers [low, high), got {args!r}")
    return args


def _probes(sampler: str, args: list) -> list:
    if SAMPLERS[sampler] is None:
        return list(args)
    if sampler == "randint":
        return [args[0], args[1] - 1]
    return [args[0], args[1]]
