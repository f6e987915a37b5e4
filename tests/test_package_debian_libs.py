"""The second test environment really runs on Debian 12's libraries.

`make test` runs part of the suite a second time in .venv-debian (the
Makefile's DEBIAN_LIBS_TESTS), the environment that stands for the Debian
package: Debian's python3 with its python3-* packages. This checks that
each library it imports is the one dpkg installed, at dpkg's version, and
not a newer one pip brought in.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = REPO / ".venv-debian" / "bin" / "python"
SYSTEM_SITE = "/usr/lib/python3/dist-packages/"

# distribution -> (the module it provides, the Debian 12 package)
LIBRARIES = {
    "pyahocorasick": ("ahocorasick", "python3-ahocorasick"),
    "libarchive-c": ("libarchive", "python3-libarchive-c"),
    "pymilter": ("milter", "python3-milter"),
    "aiosmtpd": ("aiosmtpd", "python3-aiosmtpd"),
    "dkimpy": ("dkim", "python3-dkim"),
    "dnspython": ("dns", "python3-dnspython"),
    "authres": ("authres", "python3-authres"),
    "prometheus-client": ("prometheus_client", "python3-prometheus-client"),
    "PyYAML": ("yaml", "python3-yaml"),
    "numpy": ("numpy", "python3-numpy"),
}

PROBE = """
import importlib, importlib.metadata, json, sys
found = {}
for dist, module in json.loads(sys.argv[1]).items():
    found[dist] = (importlib.metadata.version(dist), importlib.import_module(module).__file__)
print(json.dumps(found))
"""


def debian_version(package: str) -> str:
    """The upstream part of an installed Debian package's version (1:1.24.2-1+deb12u1 -> 1.24.2)."""
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], check=True,
                             capture_output=True, text=True).stdout
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def test_debian_environment_imports_debians_libraries():
    assert DEBIAN_PYTHON.exists(), "`make test` builds .venv-debian"
    modules = {dist: module for dist, (module, _) in LIBRARIES.items()}
    out = subprocess.run([str(DEBIAN_PYTHON), "-c", PROBE, json.dumps(modules)], check=True,
                         capture_output=True, text=True, cwd="/").stdout
    found = json.loads(out)
    for dist, (_, package) in LIBRARIES.items():
        version, path = found[dist]
        assert path.startswith(SYSTEM_SITE), (dist, path)
        assert debian_version(package).startswith(version.split("+")[0]), (dist, version)
