"""perucast use cases and their registry.

Use cases are imported lazily so that importing ``models`` has no side effects and stays fast.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

if TYPE_CHECKING:
    from models.base import UseCase

# name -> "module:class"; add a use case here and nowhere else.
REGISTRY: dict[str, str] = {
    "crop_demand": "models.crop_demand:CropDemand",
    "fish_stock": "models.fish_stock:FishStock",
}

USE_CASE_NAMES: tuple[str, ...] = tuple(REGISTRY)


@cache
def get_use_case(name: str) -> UseCase:
    """Return the use case called ``name``.

    Raises:
        KeyError: with the list of known use cases when ``name`` is unknown.
    """
    try:
        target = REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown use case {name!r}; known use cases: {', '.join(USE_CASE_NAMES)}"
        ) from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()


def _known_use_case(name: str) -> str:
    if name not in REGISTRY:
        raise ValueError(f"unknown use case {name!r}; known: {', '.join(USE_CASE_NAMES)}")
    return name


# A use-case name in a step's config: unknown names fail when the config is built.
UseCaseName = Annotated[str, AfterValidator(_known_use_case)]
