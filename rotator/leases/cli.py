"""``rotator checkout / leases / renew / checkin``: a person's side of check-out leases.

    rotator checkout ehpc-hz-abc123 --ttl 2h --reason "debug job 4711"   # prints the password
    rotator checkout ehpc-hz-abc123 --ttl 2h --json
    rotator leases
    rotator renew <lease_id> --ttl 1h
    rotator checkin <lease_id>

They talk to ``rotator serve`` (``--server``, else ``$ROTATOR_SERVER``, else
``http://127.0.0.1:8080``), which holds rotator's own Vault credentials; the person proves who
they are with their own Vault token (``$VAULT_TOKEN`` / ``$BAO_TOKEN``, else ``~/.vault-token``),
sent in ``X-Vault-Token`` and never on the command line. Exit codes: 0 done, 1 refused (the
message says why), 2 usage, 4 the server could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["COMMANDS", "add_arguments", "insecure_server", "run"]

COMMANDS = ("checkout", "leases", "renew", "checkin")
SERVER_ENV = "ROTATOR_SERVER"
_DEFAULT_SERVER = "http://127.0.0.1:8080"
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 4


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", help=f"rotator serve's URL (default ${SERVER_ENV}, else {_DEFAULT_SERVER})"
    )
    parser.add_argument("--ca-cert", help="PEM CA bundle that signed rotator serve's certificate")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def add_arguments(sub: Any) -> None:
    """Register the four subcommands on the ``rotator`` subparsers."""
    checkout = sub.add_parser("checkout", help="check a VNC password out (prints it)")
    checkout.add_argument("cluster_id")
    checkout.add_argument("--ttl", help="how long, e.g. 2h (default serve.checkout_default_ttl)")
    checkout.add_argument("--reason", default="", help="why (recorded with the lease)")
    _common(checkout)
    leases = sub.add_parser("leases", help="open check-out leases you may see")
    _common(leases)
    renew = sub.add_parser("renew", help="extend a lease (up to serve.checkout_max_ttl)")
    renew.add_argument("lease_id")
    renew.add_argument("--ttl", help="from now, e.g. 1h")
    _common(renew)
    checkin = sub.add_parser("checkin", help="end a lease early: the password is rotated")
    checkin.add_argument("lease_id")
    _common(checkin)


def _token() -> str | None:
    for name in ("VAULT_TOKEN", "BAO_TOKEN"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    path = Path.home() / ".vault-token"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def insecure_server(server: str) -> str | None:
    """Why the token must not go to ``server``, or None. Plain http:// only to this machine:
    the request carries the person's own Vault token and the answer a password."""
    url = urlsplit(server)
    if url.scheme == "https":
        return None
    if url.scheme != "http":
        return f"{server!r} is not an http(s):// URL"
    host = url.hostname or ""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a name: not known to be this machine
    return (
        f"refusing to send your Vault token to {server} over plain http://: use https:// "
        "(rotator serve with serve.tls_cert_file/tls_key_file; --ca-cert for its CA)"
    )


def _server(args: argparse.Namespace) -> str:
    return (args.server or os.environ.get(SERVER_ENV) or _DEFAULT_SERVER).rstrip("/")


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.command == "checkout":
        body: dict[str, Any] = {"cluster_id": args.cluster_id, "reason": args.reason}
        if args.ttl:
            body["ttl"] = args.ttl
        return "POST", "/v1/checkout", body
    if args.command == "renew":
        body = {"lease_id": args.lease_id}
        if args.ttl:
            body["ttl"] = args.ttl
        return "POST", "/v1/renew", body
    if args.command == "checkin":
        return "POST", "/v1/checkin", {"lease_id": args.lease_id}
    return "GET", "/v1/leases", None


async def _call(args: argparse.Namespace, token: str) -> tuple[int, dict[str, Any]]:
    import aiohttp  # noqa: PLC0415 - keeps `rotator --help` lean

    server = _server(args)
    method, path, body = _request(args)
    context: ssl.SSLContext | bool = True
    if args.ca_cert:
        context = ssl.create_default_context(cafile=args.ca_cert)
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(
            method,
            f"{server}{path}",
            json=body,
            headers={"X-Vault-Token": token},
            ssl=context,
            allow_redirects=False,  # the token must not follow a redirect anywhere
        ) as response,
    ):
        try:
            answer = await response.json(content_type=None)
        except (json.JSONDecodeError, aiohttp.ContentTypeError):
            answer = {"error": f"{server} answered {response.status} without JSON"}
        return response.status, answer if isinstance(answer, dict) else {}


def _print_leases(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no open leases")
        return
    columns = ("cluster_id", "state", "holder", "reason", "expires_at", "lease_id")
    table = [[str(row.get(c) or row.get("ended_at") or "") for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    token = _token()
    if not token:
        print(
            "rotator: no Vault token: log in (bao login / vault login) or set VAULT_TOKEN",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if (problem := insecure_server(_server(args))) is not None:
        print(f"rotator: {problem}", file=sys.stderr)
        return EXIT_USAGE
    import aiohttp  # noqa: PLC0415 - keeps `rotator --help` lean

    try:
        status, answer = asyncio.run(_call(args, token))
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"rotator: cannot reach rotator serve: {type(exc).__name__}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if status >= 300:
        retry = f" (retry in {answer['retry_after']:.0f}s)" if answer.get("retry_after") else ""
        print(f"rotator: {answer.get('error', f'HTTP {status}')}{retry}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(answer, indent=2))
    elif args.command == "checkout":
        print(answer["password"])
        print(
            f"lease {answer['lease_id']} until {answer['expires_at']}; "
            f"`rotator checkin {answer['lease_id']}` when done",
            file=sys.stderr,
        )
    elif args.command == "renew":
        print(f"lease {answer['lease_id']} until {answer['expires_at']}")
    elif args.command == "checkin":
        print(
            f"checked in; {answer['cluster_id']}'s password is being rotated"
            if answer.get("rotating")
            else "checked in; other leases on the cluster are still open"
        )
    else:
        _print_leases(list(answer.get("leases") or []))
    return 0
