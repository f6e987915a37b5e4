"""clammail: a clamd-compatible scan daemon, milter and SMTP content filter."""

__version__ = "0.1.0"

# The ClamAV functionality level (FLEVEL) whose signatures we claim to
# understand: clamd 1.4.6 reports 216 ("Engine flevel: 216" in clamconf).
# Signatures whose min/max engine level excludes it are skipped, as clamd does.
FLEVEL = 216
