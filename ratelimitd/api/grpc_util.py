"""Register unary gRPC methods whose request decoding cannot fail with a trace.

grpc's generated registration decodes with `FromString`; corrupt bytes then surface as UNKNOWN with the
exception's text and a traceback in our log. Here a decode failure becomes a `Malformed` request that
the handler answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message


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


def add_unary_methods(
    server: grpc.aio.Server, service: str, methods: dict[str, tuple[Callable[..., Any], type[Message], type[Message]]]
) -> None:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=safe_deserializer(req), response_serializer=resp.SerializeToString
        )
        for name, (handler, req, resp) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
