"""The fake's state in a JSON file shared by processes: locking, atomic writes, killed writers' leftovers."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from powerdrivers import HypervisorError
from powerdrivers_fake._processes import process_alive, this_process
from powerdrivers_fake._store import Document, Store, copy_document, trim
from powerdrivers_fake._validate import document_problem

#: How old a temporary file of a writer whose liveness cannot be told must be to count as left behind.
STALE_TEMPORARY_S: Final = 60.0


class FileStore(Store):
    """State kept in a JSON file; an exclusive ``flock`` on a ``.lock`` file beside it serialises processes.

    Writes go to a temporary file (named after the writer's process) renamed
    over the old one, so a reader never sees half a document and a crash
    mid-write loses nothing; the file keeps its permissions. Temporary files
    that killed writers left behind are removed on the first transaction.
    """

    def __init__(self, path: Path, seed: Callable[[], Document]) -> None:
        """Check ``path`` (and any document already there) without creating anything."""
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._seed = seed
        self._thread_lock = threading.RLock()
        self._swept = False
        if not path.parent.is_dir():
            raise HypervisorError(f"fake state directory {path.parent} does not exist", code="no-directory")
        try:
            status = path.stat()
        except FileNotFoundError:
            return
        except OSError as error:
            raise self._failure("cannot be read", error) from None
        if not stat.S_ISREG(status.st_mode):
            raise HypervisorError(f"fake state path {path} is not a regular file", code="not-a-file")
        # A file that is no state document is refused before a lock file is put beside it.
        self._read()

    @contextmanager
    def transaction(self) -> Iterator[Document]:
        with self._thread_lock, self._locked():
            if not self._swept:
                self._sweep()
            original = self._load()
            working = copy_document(original)
            yield working
            trim(working)
            if working != original:
                self._save(working)

    def fingerprint(self) -> object:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size, status.st_ino

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            lock_file = open(self._lock_path, "a+b")  # noqa: SIM115 (closed below, after the lock)
        except OSError as error:
            raise self._failure("cannot be locked", error, self._lock_path) from None
        with lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield

    def _load(self) -> Document:
        document = self._read()
        if document is None:
            document = self._seed()
            self._save(document)
        return document

    def _read(self) -> Document | None:
        """Return the checked document in the file, or None if there is no file."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as error:
            raise self._corrupt(f"is not UTF-8 text: {error}") from None
        except OSError as error:
            raise self._failure("cannot be read", error) from None
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            raise self._corrupt(f"is not valid JSON: {error}") from None
        problem = document_problem(document)
        if problem:
            raise self._corrupt(problem)
        return document  # type: ignore[no-any-return]

    def _corrupt(self, problem: str) -> HypervisorError:
        return HypervisorError(
            f"fake state file {self.path} {problem}; it was left untouched", code="corrupt"
        )

    def _failure(self, what: str, error: OSError, path: Path | None = None) -> HypervisorError:
        return HypervisorError(f"fake state file {path or self.path} {what}: {error.strerror}", code="io")

    def _save(self, document: Document) -> None:
        pid, _ = this_process()
        temporary = self.path.with_name(f"{self.path.name}.{pid}.{secrets.token_hex(4)}.tmp")
        try:
            # Created as any new file is (the umask applies), then given the state file's mode.
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                with open(handle, "w", encoding="utf-8", closefd=False) as output:
                    with suppress(FileNotFoundError):
                        os.fchmod(handle, stat.S_IMODE(self.path.stat().st_mode))
                    json.dump(document, output, indent=1, sort_keys=True)
            finally:
                os.close(handle)
            os.replace(temporary, self.path)
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise self._failure("cannot be written", error) from None
            raise

    def _sweep(self) -> None:
        """Remove the temporary files that writers killed mid-write left beside the state file.

        Runs under the lock, so no live writer of this file is mid-write; a
        temporary file still counts as another's only while its writer's
        process lives and it is recent.
        """
        self._swept = True
        pattern = re.compile(
            re.escape(self.path.name)
            + r"\.(\d+)\.[0-9a-f]+\.tmp|"
            + re.escape(self.path.name)
            + r"[a-z0-9_]{8}\.tmp"
        )
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return
        now = time.time()
        for name in names:
            match = pattern.fullmatch(name)
            if match is None:
                continue
            leftover = self.path.with_name(name)
            try:
                old = now - leftover.stat().st_mtime > STALE_TEMPORARY_S
                if old or (match[1] is not None and not process_alive(int(match[1]), None)):
                    leftover.unlink()
            except OSError:
                continue
