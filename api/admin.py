"""Administration from the command line, for the first admin and for emergencies.

    python -m api.admin create-user NAME [--admin] [--email EMAIL]
    python -m api.admin create-key NAME [--key-name LABEL]
    python -m api.admin revoke-key PREFIX

A new key is printed alone on the last line of stdout (and nowhere else); messages go to
stderr. Exit status: 0 done, 1 refused (name taken, no such user or key), 2 database
unreachable.
"""

import argparse
import asyncio
import sys

from shared.db.engine import create_engine, transaction
from shared.db.keys import KeyRepository
from shared.db.users import UserRepository
from shared.domain.enums import Role
from shared.domain.errors import DatabaseUnavailable, NameTaken, UserNotFound
from shared.services.accounts import open_account
from shared.settings import get_settings


async def create_user(name: str, *, admin: bool, email: str | None) -> str:
    """A new user and its first key; returns the key."""
    role = Role.ADMIN if admin else Role.MEMBER
    engine = create_engine(get_settings(), pool_size=1)
    try:
        async with transaction(engine) as conn:
            user, key, _ = await open_account(conn, name=name, email=email, role=role)
    finally:
        await engine.dispose()
    _say(f"created {role.value} {name!r} ({user.id})")
    return key


async def create_key(user_name: str, *, key_name: str) -> str:
    engine = create_engine(get_settings(), pool_size=1)
    try:
        async with transaction(engine) as conn:
            user = await UserRepository(conn).by_name(user_name)
            key, record = await KeyRepository(conn).create(user_id=user.id, name=key_name)
    finally:
        await engine.dispose()
    _say(f"created key {record.prefix}… for {user_name!r}")
    return key


async def revoke_key(prefix: str) -> int:
    engine = create_engine(get_settings(), pool_size=1)
    try:
        async with transaction(engine) as conn:
            revoked = await KeyRepository(conn).revoke_by_prefix(prefix)
    finally:
        await engine.dispose()
    for record in revoked:
        _say(f"revoked key {record.prefix}… ({record.name!r}, user {record.user_id})")
    if not revoked:
        _say(f"no active key starts with {prefix!r}")
    return 0 if revoked else 1


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m api.admin", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    user = commands.add_parser("create-user", help="create a user; prints its first key")
    user.add_argument("name")
    user.add_argument("--admin", action="store_true", help="an admin (default: a member)")
    user.add_argument("--email")
    key = commands.add_parser("create-key", help="a new key for a user; prints it")
    key.add_argument("name", help="the user's name")
    key.add_argument("--key-name", default="cli key", help="a label for the key")
    revoke = commands.add_parser("revoke-key", help="revoke the key listed with PREFIX")
    revoke.add_argument("prefix", help="the 11 characters listed as its prefix (tq_Ab12Cd34)")
    return parser


async def _run(args: argparse.Namespace) -> int:
    if args.command == "create-user":
        print(await create_user(args.name, admin=args.admin, email=args.email))
        return 0
    if args.command == "create-key":
        print(await create_key(args.name, key_name=args.key_name))
        return 0
    return await revoke_key(args.prefix)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (NameTaken, UserNotFound) as exc:
        _say(f"error: {exc}")
        return 1
    except DatabaseUnavailable:
        _say("error: the database is unreachable (check DATABASE_URL)")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
