#!/bin/sh
# A 10 GB flat zip bomb (one deflate entry) through clammail and clamscan at
# their default limits: time and peak memory. Run from the repository root.
set -e
tmp=$(mktemp -d)
.venv/bin/python - "$tmp/flat10g.zip" <<'PY'
import sys
sys.path.insert(0, "tests")
from test_archive_hostile import MB, deflate_zeros, zip_raw
open(sys.argv[1], "wb").write(zip_raw([("zeros.bin", deflate_zeros(10 * 1024 * MB), 8, 0xFFFFFFFF, 0)]))
PY
echo "00000000000000000000000000000000:1:Never" > "$tmp/never.hdb"
/usr/bin/time -f "clammail: %e s, max RSS %M KiB" .venv/bin/clammail scan --no-summary -d "$tmp/never.hdb" "$tmp/flat10g.zip"
/usr/bin/time -f "clamscan: %e s, max RSS %M KiB" clamscan --no-summary -d "$tmp/never.hdb" "$tmp/flat10g.zip"
rm -rf "$tmp"
# Measured 2026-11-26 06:50 (2 cores, busy): see bench/RESULTS.md
#   clammail: 2.75 s, max RSS 202272 KiB   (100 MB cut, as ClamAV)
#   clamscan: 3.45 s, max RSS  58356 KiB
