"""`clammail quarantine`: look at and act on the proxy's quarantine.

    clammail quarantine [-c FILE] list
    clammail quarantine [-c FILE] show ID [--message]
    clammail quarantine [-c FILE] release ID [--next-hop HOST:PORT]
    clammail quarantine [-c FILE] delete ID

The quarantine directory and the next hop come from the proxy section of
the YAML file. `release` sends the message to the next hop with its
original envelope, then removes it from the quarantine; a release that
fails leaves it there. Exit codes: 0 done, 1 no such entry or the release
failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

from clammail.config.clamdconf import ConfigError
from clammail.proxy.nexthop import NextHop, NextHopError
from clammail.proxy.quarantine import Quarantine, QuarantineError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clammail quarantine",
                                description="List, show, release or delete quarantined mail.")
    p.add_argument("-c", "--config", default="/etc/clammail/clammail.yaml")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="one line per quarantined message")
    show = sub.add_parser("show", help="the envelope and verdict of one message")
    show.add_argument("id")
    show.add_argument("--message", action="store_true", help="print the message itself")
    release = sub.add_parser("release", help="deliver it to the next hop, then forget it")
    release.add_argument("id")
    release.add_argument("--next-hop", default=None, help="instead of the configured NextHop")
    delete = sub.add_parser("delete", help="forget it")
    delete.add_argument("id")
    return p


async def release(quarantine: Quarantine, entry_id: str, settings, next_hop: str) -> str:
    """Send a quarantined message on with its original envelope; the next hop's reply."""
    entry = quarantine.claim(entry_id)
    hop = NextHop(next_hop, helo=settings.hostname or socket.getfqdn(),
                  timeout=settings.next_hop_timeout, starttls=settings.next_hop_starttls,
                  tls_verify=settings.next_hop_tls_verify, user=settings.next_hop_user,
                  password=settings.next_hop_password)
    try:
        await hop.connect()
        reply = await hop.command(f"MAIL FROM:<{entry.sender}>")
        if not reply.ok:
            raise NextHopError(f"sender refused: {reply.wire()}")
        accepted = 0
        for rcpt in entry.recipients:
            if (await hop.command(f"RCPT TO:<{rcpt}>")).ok:
                accepted += 1
        if not accepted:
            raise NextHopError("every recipient refused")
        replies = await hop.data(entry.message_path.read_bytes(), accepted)
        if not all(r.ok for r in replies):
            raise NextHopError(f"message refused: {replies[0].wire()}")
    except (NextHopError, OSError):
        quarantine.unclaim(entry_id)
        raise
    finally:
        await hop.close()
    quarantine.delete(entry_id)
    return replies[0].wire()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from clammail.proxy.settings import ProxySettings, load_config

    try:
        settings = ProxySettings.from_config(load_config(args.config))
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return 2
    quarantine = Quarantine(settings.quarantine_directory)
    try:
        if args.action == "list":
            for entry in quarantine.list():
                meta = entry.meta
                print(f"{entry.id}  {meta.get('time', '-')}  {meta.get('signature') or '-'}  "
                      f"<{entry.sender}> -> {', '.join(f'<{r}>' for r in entry.recipients)}  "
                      f"{meta.get('size', 0)} bytes")
        elif args.action == "show":
            entry = quarantine.get(args.id)
            if args.message:
                sys.stdout.buffer.write(entry.message_path.read_bytes())
            else:
                print(json.dumps(entry.meta, indent=2, sort_keys=True))
        elif args.action == "release":
            reply = asyncio.run(release(quarantine, args.id, settings,
                                        args.next_hop or settings.next_hop))
            print(f"{args.id}: released ({reply.splitlines()[-1]})")
        elif args.action == "delete":
            quarantine.delete(args.id)
            print(f"{args.id}: deleted")
    except QuarantineError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return 1
    except (NextHopError, OSError) as exc:
        sys.stderr.write(f"ERROR: release of {args.id} failed, it stays quarantined: {exc}\n")
        return 1
    return 0
