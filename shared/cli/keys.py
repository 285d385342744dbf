"""`llm-jobs keys create | list | revoke`: owners' API keys, kept in the store as digests.

A key is shown once, when it is made; the store keeps its SHA-256 only. Admin keys stay in
API_KEYS (the environment); these belong to an owner, who sees only their own jobs (README,
"Owners and keys").
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared.cli.common import EXIT_INVALID_INPUT, err, on_store
from shared.contracts.models import OWNER_PATTERN
from shared.contracts.owners import canonical_owner, new_key
from shared.contracts.settings import get_settings

keys_app = typer.Typer(help="Make, list and revoke owners' API keys (kept in the store as digests).",
                       no_args_is_help=True)




@keys_app.command()
def create(
    owner: Annotated[str, typer.Option(help="Whose key: a name, or a Supabase user id (then the key sees the same "
                                            "jobs as that user's sign-in).")],
    label: Annotated[str | None, typer.Option(help="A note to recognise the key by (e.g. 'vercel-prod').")] = None,
) -> None:
    """Make a key for OWNER. It is printed once, on stdout: store it now."""
    if not re.match(OWNER_PATTERN, owner):
        err.print(f"[bold red]error:[/] --owner {owner[:40]!r}: 1 to 128 characters, letters, digits and . _ @ : + -, "
                  "starting with a letter or digit")
        raise typer.Exit(EXIT_INVALID_INPUT)
    owner = canonical_owner(owner)
    key, rec = new_key(owner, label)
    on_store(lambda store: store.create_key(rec))
    err.print(f"made key [bold]{rec.id}[/] for owner [bold]{owner}[/] (shown once; revoke: llm-jobs keys revoke "
              f"{rec.id})")
    print(key)


@keys_app.command("list")
def list_keys(
    owner: Annotated[str | None, typer.Option(help="Only this owner's keys.")] = None,
) -> None:
    """Every key (never the key itself: its id, owner, first characters, and whether it was revoked)."""
    found = on_store(lambda store: store.list_keys(owner=owner and canonical_owner(owner)))
    table = Table("id", "owner", "starts with", "label", "created", "revoked")
    for k in found:
        table.add_row(k.id, k.owner, k.hint + "…", k.label or "", f"{k.created_at:%Y-%m-%d %H:%M}" if k.created_at
                      else "", f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")
    Console().print(table)


@keys_app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...), from `llm-jobs keys list`.")]) -> None:
    """Revoke a key. A running API stops taking it within KEY_CACHE_S seconds."""
    if not on_store(lambda store: store.revoke_key(key_id)):
        err.print(f"[bold red]error:[/] no key {key_id!r}")
        raise typer.Exit(EXIT_INVALID_INPUT)
    err.print(f"revoked {key_id} (a running API stops taking it within {get_settings().key_cache_s:g} s)")
