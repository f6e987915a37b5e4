"""All signature matching on one buffer, in the order clamd reports it.

Body (.ndb) and logical (.ldb, .yar) signatures share one `BodyMatcher` over
all their hex patterns; this module turns its hits into reported names:
body signatures in the order clamd reports them (`BodyMatcher.report_order`:
target before generic, Boyer-Moore before Aho-Corasick, then where clamd's
scan notices each match), then logical signatures.
Executable structure (PE section hashes, import hashes) is matched in
`match_executable`.
"""

from __future__ import annotations

from collections.abc import Callable

from clammail.engine.objectinfo import ObjectInfo
from clammail.signatures.database import Database

Report = Callable[[str], None]

class SignatureMatcher:
    def __init__(self, database: Database, backend: str | None = None, options=None):

        self.database = database
        # Not copied: from the compiled-database cache this is a table that makes
        # each signature when first asked for (see bodysig.SignatureTable).
        self._body_sigs = database.body_signatures
        self._logical = None
        if database.logical_signatures:
            from clammail.engine.logical import LogicalMatcher, PcreLimits

            self._logical = LogicalMatcher(
                database.logical_signatures,
                first_pattern=len(self._body_sigs), limits=PcreLimits.from_options(options),
            )
        self.body = self._compiled_matcher(backend)

    def _patterns(self):
        from clammail.signatures.bodysig import SignatureTable
        from clammail.signatures.patterns import PatternTable

        body = self._body_sigs
        parts = [body.patterns() if isinstance(body, SignatureTable)
                 else [sig.pattern for sig in body]]
        if self._logical is not None:
            parts.append(self._logical.patterns)
        return PatternTable.join(parts)

    def _compiled_matcher(self, backend: str | None):
        """The BodyMatcher from the compiled-database cache, or a new one (then cached):
        building one (hyperscan's compiler above all) takes seconds per 100 000 patterns."""
        from clammail.engine.match import BodyMatcher
        from clammail.engine.match.backends import backend_name

        compiled = getattr(self.database, "compiled", None)
        key = f"body_matcher:{backend_name(backend)}"
        cached = compiled.get(key) if compiled is not None else None
        count = len(self._body_sigs) + (len(self._logical.patterns) if self._logical else 0)
        if cached is not None and cached.pattern_count == count:
            return cached
        matcher = BodyMatcher(self._patterns(), backend=backend,
                              cache_dir=getattr(self.database, "cache_dir", None))
        if compiled is not None and getattr(self.database, "cache_dir", None):
            from clammail.signatures.dbcache import save_compiled

            compiled[key] = matcher
            save_compiled(self.database)
        return matcher

    @property
    def backend_name(self) -> str:
        return self.body.backend_name

    def match_buffer(self, data, target: int, info: ObjectInfo, report: Report) -> None:
        """Report every body and logical signature that matches `data` seen as `target`."""
        if not self.body.pattern_count:
            # Rules made only of PCREs (YARA regex strings) still need evaluating.
            if self._logical is not None:
                self._logical.evaluate({}, data, target, info, report)
            return
        hits = self.body.scan(data, target, info)
        if not hits:
            if self._logical is not None:
                self._logical.evaluate({}, data, target, info, report)
            return
        count = len(self._body_sigs)
        direct = self.body.report_order(hits, [index for index in hits if index < count],
                                        len(data), target)
        for index in direct:
            report(self._body_sigs[index].name)
        if self._logical is not None:
            self._logical.evaluate(hits, data, target, info, report)

    def match_executable(self, info: ObjectInfo, report: Report, options,
                         alert: Report | None = None,
                         after_sections: Callable[[], None] | None = None) -> None:
        """Heuristics.Broken.Executable, PE section hashes (.mdb/.msb), import hashes (.imp).

        `after_sections` runs where libclamav's PE scanner reads the overlay
        (between the section and the import hashes, for PE files it scans)."""
        db = self.database
        hashes = len(db.section_hashes) or len(db.import_hashes)
        check_broken = alert is not None and options["AlertBrokenExecutables"]
        if not (hashes or check_broken or after_sections):
            return
        exe = info.executable
        if exe is None:
            return
        # libclamav's PE and ELF scanners run only with ScanPE / ScanELF.
        switch = {"PE": "ScanPE", "ELF": "ScanELF"}.get(exe.kind)
        if switch and not options[switch]:
            return
        from clammail.formats.executable import (
            BROKEN_EXECUTABLE,
            import_hash_candidates,
            section_hash_candidates,
        )

        if check_broken and exe.broken:
            alert(BROKEN_EXECUTABLE)  # and libclamav looks no further at it
            return
        for index, candidates in ((db.section_hashes, section_hash_candidates),
                                  (db.import_hashes, import_hash_candidates)):
            if candidates is import_hash_candidates and after_sections and exe.kind == "PE":
                after_sections()
            if not len(index):
                continue
            for digest, size in candidates(exe, info.data, index.algorithms()):
                for name in index.lookup(digest, size):
                    report(name)
