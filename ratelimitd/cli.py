"""`ratelimitd serve | config validate | check` — the command line other tools and tests drive."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ratelimitd import __version__
from ratelimitd.settings import add_serve_arguments, env_default, settings_from_args


def _parse_descriptor(text: str) -> list[tuple[str, str]]:
    entries = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"descriptor entry '{part}' must look like key=value")
        entries.append((key, value))
    return entries


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ratelimitd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    add_serve_arguments(serve)

    config = sub.add_parser("config", help="work with config files")
    csub = config.add_subparsers(dest="config_command", required=True)
    validate = csub.add_parser("validate", help="check a config file or directory")
    validate.add_argument("path")
    explain = csub.add_parser("explain", help="which rule a descriptor matches, and its Redis key")
    explain.add_argument("path")
    explain.add_argument("--domain", required=True)
    explain.add_argument("--descriptor", required=True, type=_parse_descriptor, help="k=v[,k=v...]")
    explain.add_argument("--key-prefix", default=env_default("key-prefix", "rl:"))
    explain.add_argument("--hash-values", action="store_true")
    csub.add_parser("schema", help="print the JSON Schema of the config format")
    diff = csub.add_parser("diff", help="limits added, removed or changed between two configs")
    diff.add_argument("old")
    diff.add_argument("new")
    export = csub.add_parser("export", help="write the domains kept in the store as YAML files")
    export.add_argument("out", help="directory to write <domain>.yaml files into")
    imp = csub.add_parser("import", help="load YAML files into the store (new domains; --update replaces)")
    imp.add_argument("path", help="a config file or directory")
    imp.add_argument("--update", action="store_true", help="replace domains the store has in another version")
    imp.add_argument("--who", default="config import", help="recorded as the author in each domain's history")
    for p in (export, imp):
        p.add_argument("--redis-url", default=env_default("redis-url", "redis://127.0.0.1:6379/0"))
        p.add_argument("--key-prefix", default=env_default("key-prefix", "rl:"))

    check = sub.add_parser("check", help="send one Envoy RLS request and print the decision")
    check.add_argument("--target", default=env_default("target", "127.0.0.1:8081"))
    check.add_argument("--domain", required=True)
    check.add_argument(
        "--descriptor",
        action="append",
        required=True,
        type=_parse_descriptor,
        help="k=v[,k=v...]; repeat for several descriptors",
    )
    check.add_argument("--hits", type=int, default=0, help="hits_addend (0 means 1)")
    check.add_argument("--timeout", type=float, default=5.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "config":
        from ratelimitd import config_tools

        if args.config_command == "explain":
            return config_tools.explain(args.path, args.domain, args.descriptor, args.key_prefix, args.hash_values)
        if args.config_command == "schema":
            return config_tools.schema()
        if args.config_command == "diff":
            return config_tools.diff(args.old, args.new)
        if args.config_command in ("export", "import"):
            from ratelimitd import limits_tools

            if args.config_command == "export":
                return limits_tools.export_domains(args.redis_url, args.key_prefix, args.out)
            return limits_tools.import_domains(args.redis_url, args.key_prefix, args.path, args.update, args.who)
        return cmd_validate(args.path)
    return cmd_check(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from ratelimitd.config.loader import ConfigError
    from ratelimitd.logs import setup_logging
    from ratelimitd.store.embedded import NoRedisServer

    settings = settings_from_args(args)
    setup_logging(settings.log_level)
    try:
        from ratelimitd.workers import run_workers, serve_one

        return run_workers(settings) if settings.workers > 1 else serve_one(settings)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1
    except NoRedisServer as err:
        print(f"ratelimitd: {err}", file=sys.stderr)
        return 1


def cmd_validate(path: str) -> int:
    from ratelimitd.config.loader import load_or_report

    config = load_or_report(path)
    if config is None:
        return 1
    for line in config.summary():
        print(line)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import grpc
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
    from google.protobuf import json_format

    request = rls_pb2.RateLimitRequest(domain=args.domain, hits_addend=args.hits)
    for entries in args.descriptor:
        request.descriptors.append(
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
            )
        )
    with grpc.insecure_channel(args.target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        try:
            response = stub.ShouldRateLimit(request, timeout=args.timeout)
        except grpc.RpcError as err:
            print(json.dumps({"error": err.code().name, "message": err.details()}), file=sys.stderr)
            return 1
    print(json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True), indent=2))
    return 2 if response.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT else 0
