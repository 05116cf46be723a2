"""Collect context (read-only): the layer version, its whole policy, and who uses it.

A function can only use layers of its own region, so consumers are the functions of
the layer's account in the layer's region (published versions too). Each part that
fails is named in ``errors``; the rest is still returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from integrations.aws import LayerPolicy, get_layer_policy, get_layer_version, iter_function_configurations


@dataclass(frozen=True)
class Consumer:
    function_arn: str
    function_name: str
    version: str
    layer_version_arn: str
    pins_granted_version: bool


@dataclass(frozen=True)
class LayerContext:
    layer_version: dict | None
    policy: LayerPolicy
    consumers: tuple[Consumer, ...]
    errors: tuple[str, ...] = ()

    @property
    def consumer_arns(self) -> list[str]:
        return [c.function_arn for c in self.consumers]


def consumers_of_layer(functions: Iterable[dict], layer_arn: str, version: int) -> list[Consumer]:
    """Functions whose configuration references any version of ``layer_arn`` (pure)."""
    granted = f"{layer_arn}:{version}"
    found = []
    for function in functions:
        for layer in function.get("Layers") or []:
            arn = layer.get("Arn", "")
            if arn.rsplit(":", 1)[0] == layer_arn:
                found.append(Consumer(
                    function_arn=function.get("FunctionArn", ""),
                    function_name=function.get("FunctionName", ""),
                    version=str(function.get("Version", "$LATEST")),
                    layer_version_arn=arn,
                    pins_granted_version=arn == granted,
                ))
    return found


def collect_context(lambda_client, layer_arn: str, version: int) -> LayerContext:
    errors: list[str] = []

    def attempt(what: str, fn, default):
        try:
            return fn()
        except Exception as exc:  # context is best effort; the case goes on without it
            errors.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
            return default

    layer_version = attempt("GetLayerVersion", lambda: get_layer_version(lambda_client, layer_arn, version), None)
    policy = attempt("GetLayerVersionPolicy", lambda: get_layer_policy(lambda_client, layer_arn, version),
                     LayerPolicy(exists=False))
    consumers = attempt("ListFunctions", lambda: consumers_of_layer(
        iter_function_configurations(lambda_client), layer_arn, version), [])
    return LayerContext(layer_version, policy, tuple(consumers), tuple(errors))
