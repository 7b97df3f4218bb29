"""Register the check methods, whose request decoding cannot fail with a trace.

grpc's generated registration decodes with `FromString`; corrupt bytes then surface as UNKNOWN with the
exception's text and a traceback in our log. Here a decode failure becomes a `Malformed` request that
the handler answers with INVALID_ARGUMENT. The deserializer turns the bytes straight into the engine's `Request`,
remembering recent small requests by their bytes. Gateways send the same few descriptor sets over and over,
and walking a protobuf message field by field costs more Python time than anything else in a check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from ratelimitd.engine.request import InvalidRequest, Request

M = TypeVar("M", bound=Message)
# Requests remembered by their bytes, per method; only small ones, so the cache stays under ~8 MiB.
REQUEST_CACHE_SIZE = 8192
REQUEST_CACHE_MAX_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str


def safe_deserializer(cls: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def decode(data: bytes) -> Message | Malformed:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as err:
            return Malformed(f"malformed {cls.DESCRIPTOR.full_name}: {err}")

    return decode


def request_deserializer(cls: type[M], decode: Callable[[M], Request]) -> Callable[[bytes], Request | Malformed]:
    """Bytes -> the engine's Request (or Malformed with the reason), cached by the bytes for small requests."""
    parse = safe_deserializer(cls)
    cache: dict[bytes, Request] = {}

    def deserialize(data: bytes) -> Request | Malformed:
        found = cache.get(data)
        if found is not None:
            return found
        msg = parse(data)
        if isinstance(msg, Malformed):
            return msg
        try:
            req = decode(msg)
        except InvalidRequest as err:
            return Malformed(str(err))
        if len(data) <= REQUEST_CACHE_MAX_BYTES:
            if len(cache) >= REQUEST_CACHE_SIZE:
                cache.clear()
            cache[data] = req
        return req

    return deserialize


# (handler, request class, response class, request class -> engine Request)
CheckMethod = tuple[Callable[..., Any], type[Message], type[Message], Callable[[Any], Request]]


def add_check_methods(server: grpc.aio.Server, service: str, methods: dict[str, CheckMethod]) -> None:
    """Register check methods; each handler receives a decoded `Request | Malformed`."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=request_deserializer(req, decode),
            response_serializer=resp.SerializeToString,
        )
        for name, (handler, req, resp, decode) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
