"""Body-pattern matching: a multi-literal automaton plus verification of whole patterns.

`BodyMatcher` (in `matcher.py`) is the only entry point; `api.py` holds the
records it shares with the signature loaders and the engine, `compile.py`
turns ClamAV's hex syntax into parts, `verify.py` checks a part at a
candidate position, `backends.py` wraps pyahocorasick and hyperscan.
"""

from clammail.engine.match.backends import available_backends
from clammail.engine.match.matcher import BodyMatcher

__all__ = ["BodyMatcher", "available_backends"]
