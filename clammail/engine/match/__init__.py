"""Body-pattern matching: a multi-literal automaton plus verification of whole patterns.

`BodyMatcher` (in `matcher.py`) is the only entry point. It takes patterns
the signature loaders have already parsed (`clammail.signatures.patterns`,
`hexsig`, `anchors`) and compiles them into an automaton and verifiers;
`api.py` holds what it returns, `verify.py` checks a part at a candidate
position, `backends.py` wraps pyahocorasick and hyperscan (the system's libhs
through our ctypes binding, `libhs.py`).
"""

from clammail.engine.match.backends import available_backends
from clammail.engine.match.matcher import BodyMatcher

__all__ = ["BodyMatcher", "available_backends"]
