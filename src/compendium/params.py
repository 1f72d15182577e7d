"""Chapter parameters: their declaration, the named profiles, and validation.

Each chapter declares its knobs once, in ``notebooks/<chapter>.yaml``::

    parameters:
      epochs: {type: int, min: 1, max: 500, help: "training epochs"}
      device: {type: str, choices: [cpu, cuda, auto]}
    profiles:
      default: {epochs: 3, device: cpu}      # every parameter; equals the notebook's parameters cell
      quick:   {epochs: 1}                   # overrides of default
      paper:   {epochs: 200, device: cuda}

The runner and the tests read this one declaration. Validation happens before any
compute and reports every problem at once, each naming its parameter.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

PROFILES = ("quick", "default", "paper")
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


class ParameterError(ValueError):
    """One or more parameters are invalid; ``problems`` lists each, naming the parameter."""

    def __init__(self, chapter: str, problems: list[str]):
        self.chapter = chapter
        self.problems = problems
        super().__init__(f"invalid parameters for chapter '{chapter}':\n  - " + "\n  - ".join(problems))


def _parse_text(text: str) -> Any:
    """Command-line values arrive as text: read numbers as Python does ("3", "1e-3") and
    the rest as YAML would ("true", "null"); anything else stays text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> "ParamSpec":
        if d.get("type") not in _TYPES:
            raise ValueError(f"parameter '{name}': type must be one of {sorted(_TYPES)}, got {d.get('type')!r}")
        unknown = set(d) - {"type", "help", "min", "max", "choices", "nullable"}
        if unknown:
            raise ValueError(f"parameter '{name}': unknown keys {sorted(unknown)}")
        choices = tuple(d["choices"]) if d.get("choices") is not None else None
        return cls(name, d["type"], d.get("help", ""), d.get("min"), d.get("max"), choices, bool(d.get("nullable", False)))

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this parameter's type, or raise ``ValueError`` saying why not."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"'{self.name}' may not be null")
        if isinstance(value, str) and self.type != "str":
            value = _parse_text(value)
        t = _TYPES[self.type]
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"'{self.name}' must be true or false, got {value!r}")
        elif self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ValueError(f"'{self.name}' must be an integer, got {value!r}")
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"'{self.name}' must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"'{self.name}' must be finite, got {value!r}")
        else:
            value = t(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"'{self.name}' must be one of {list(self.choices)}, got {value!r}")
        if self.min is not None and value < self.min:
            raise ValueError(f"'{self.name}' must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ValueError(f"'{self.name}' must be <= {self.max}, got {value!r}")
        return value


@dataclass
class ChapterSpec:
    """What a chapter declares: its identity, its parameters and its three profiles."""

    id: str
    title: str
    paper: str
    arxiv: str | None
    datasets: list[str]
    parameters: dict[str, ParamSpec]
    profiles: dict[str, dict[str, Any]]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # "cpu": the chapter computes with numpy/statsmodels only (its ``device`` parameter accepts
    # ``auto`` and resolves it to the CPU, and refuses ``cuda``); "any": torch, on any device
    compute: str = "any"
    # the default profile's wall time in seconds in `make book` on a reference machine: the
    # order of a parallel build where the chapter has no record yet (a fresh clone); never a result
    build_cost_s: float | None = None

    @classmethod
    def load(cls, path) -> "ChapterSpec":
        with open(path, encoding="utf-8") as fh:
            d = yaml.safe_load(fh)
        params = {n: ParamSpec.from_dict(n, p) for n, p in (d.get("parameters") or {}).items()}
        profiles = d.get("profiles") or {}
        missing = [p for p in PROFILES if p not in profiles]
        if missing:
            raise ValueError(f"{path}: profiles {missing} are not declared")
        spec = cls(
            id=d["id"], title=d["title"], paper=d.get("paper", ""), arxiv=d.get("arxiv"),
            datasets=list(d.get("datasets") or []), parameters=params,
            profiles={k: dict(v or {}) for k, v in profiles.items()}, description=d.get("description", ""),
            compute=d.get("compute", "any"), build_cost_s=d.get("build_cost_s"),
        )
        if spec.compute not in ("any", "cpu"):
            raise ValueError(f"{path}: compute must be 'any' or 'cpu', got {spec.compute!r}")
        cost = spec.build_cost_s
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))
                                 or not math.isfinite(cost) or cost <= 0):
            raise ValueError(f"{path}: build_cost_s must be a positive number of seconds, got {cost!r}")
        undeclared = set(spec.profiles["default"]) ^ set(params)
        if undeclared:
            raise ValueError(f"{path}: the default profile must set every parameter exactly once; mismatch: {sorted(undeclared)}")
        for name in PROFILES:  # profiles themselves must be valid
            spec.resolve(name)
        return spec

    def resolve(self, profile: str = "default", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Parameters for ``profile`` with ``overrides`` applied, validated and typed.

        Raises :class:`ParameterError` listing every problem before anything runs."""
        problems: list[str] = []
        if profile not in self.profiles:
            raise ParameterError(self.id, [f"unknown profile '{profile}'; choose one of {list(PROFILES)}"])
        merged = {**self.profiles["default"], **self.profiles[profile], **dict(overrides or {})}
        out: dict[str, Any] = {}
        for name, value in merged.items():
            spec = self.parameters.get(name)
            if spec is None:
                close = difflib.get_close_matches(name, list(self.parameters), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(f"unknown parameter '{name}'{hint}; declared: {', '.join(self.parameters)}")
                continue
            try:
                out[name] = spec.coerce(value)
            except ValueError as err:
                problems.append(str(err))
        if problems:
            raise ParameterError(self.id, problems)
        return out
