"""Every Settings field as a command option with its ``SAKUGA_*`` variable, generated.

``with_settings_options`` gives a command one option per field (``--lease-s`` for
``lease_s``, env ``SAKUGA_LEASE_S``) and hands the command a built ``Settings``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sakuga.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

_SCALARS: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "Path": Path,
}


def _option_type(field_name: str) -> type:
    annotation = str(Settings.model_fields[field_name].annotation)
    for name, kind in _SCALARS.items():
        if name in annotation and "list" not in annotation:
            return kind
    return str  # lists (backends) are typed as one comma-separated string


def _parameter(name: str, only: set[str] | None) -> inspect.Parameter | None:
    if only is not None and name not in only:
        return None
    field = Settings.model_fields[name]
    kind = _option_type(name)
    flag = "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
    option = typer.Option(*decls, envvar=f"SAKUGA_{name.upper()}", help=field.description)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, option],
    )


def with_settings_options(only: set[str] | None = None) -> Callable[[F], F]:
    """Decorate a command taking ``settings: Settings`` with one option per settings field."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        extra = [p for n in Settings.model_fields if (p := _parameter(n, only)) is not None]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in list(kwargs) if n in Settings.model_fields}
            return command(settings=build_settings(**values), **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + extra)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options the user typed on top."""
    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)
