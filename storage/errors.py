"""Why the database cannot be used, each as one line naming the file and what to do about it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

ELSEWHERE = "or set data_dir in the config to another folder"


class StorageError(RuntimeError):
    """The database file cannot be used as asked; the message is the whole story, for one line."""


class SchemaTooNew(StorageError):
    pass


class StorageFull(StorageError):
    pass


def read_only(path: Path) -> StorageError:
    return StorageError(f"{path} is read-only: gwbot can show history, reports and logs from it but cannot "
                        f"store runs; make it and its folder {path.parent} writable, {ELSEWHERE}")


def translate(path: Path, error: sqlite3.Error) -> StorageError:
    """SQLite's error, said as what it means for this file."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL"):
        return StorageFull(f"cannot write {path}: the disk is full; free some space there and try again")
    if name.startswith("SQLITE_READONLY"):
        return read_only(path)
    if name.startswith("SQLITE_NOTADB"):
        return StorageError(f"{path} is not a gwbot database (SQLite: {error}); move it away to start a new one, "
                            f"{ELSEWHERE}")
    if name.startswith("SQLITE_CORRUPT"):
        return StorageError(f"{path} is damaged (SQLite: {error}); restore it from a backup, or move it away "
                            f"to start a new one")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StorageError(f"{path} is locked by another program (SQLite: {error}); try again when it is done")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_IOERR")):
        return StorageError(f"cannot use {path} (SQLite: {error}); check the file and its folder "
                            f"{path.parent}, {ELSEWHERE}")
    return StorageError(f"cannot use {path} (SQLite: {error}); move it away to start a new one, {ELSEWHERE}")
