"""Loading databases from files and directories (placeholder: .hdb only).

To be replaced by the full loader: clamd's DatabaseDirectory rules, every
format, .cvd/.cld containers, the compiled-database cache.
"""

from __future__ import annotations

import os

from clammail.signatures.common import LoadOptions, SignatureError, display_name
from clammail.signatures.database import Database, DatabaseInfo


class _DictHashIndex:
    def __init__(self):
        self._by = {}

    def add(self, digest: bytes, size: int | None, name: str):
        self._by.setdefault((digest, size), []).append(name)

    def lookup(self, digest, size):
        return self._by.get((digest, size), []) + self._by.get((digest, None), [])

    def algorithms(self):
        return frozenset({16: "md5", 20: "sha1", 32: "sha256"}[len(d)] for d, _ in self._by)

    def __len__(self):
        return len(self._by)


def load_database(paths: list[str], options: LoadOptions | None = None) -> Database:
    index = _DictHashIndex()
    info = DatabaseInfo()
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path))
        else:
            files.append(path)
    logical, yara_rules = [], []
    for path in files:
        if path.endswith((".ldb", ".ldu", ".yar", ".yara")):
            # Placeholder dispatch until the real loader lands.
            from clammail.signatures.logical import load_ldb
            from clammail.signatures.yara import load_yara

            with open(path, encoding="latin-1", newline="") as fh:
                text = fh.read()
            if path.endswith((".yar", ".yara")):
                loaded = load_yara(text, path, False, options or LoadOptions())
                yara_rules += loaded
            else:
                loaded = load_ldb(text, path, False, options or LoadOptions())
                logical += loaded
            info.signatures += len(loaded)
            info.files.append(path)
            continue
        if not path.endswith((".hdb", ".hsb")):
            continue
        with open(path, encoding="latin-1") as fh:
            for number, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                fields = line.split(":")
                if len(fields) < 3:
                    raise SignatureError("malformed hash signature", path, number)
                digest = bytes.fromhex(fields[0])
                size = None if fields[1] == "*" else int(fields[1])
                index.add(digest, size, display_name(fields[2], False))
                info.signatures += 1
        info.files.append(path)
    return Database(file_hashes=index, info=info, logical_signatures=logical, yara_rules=yara_rules)
