# clammail: `make run` starts the appliance, `make test` runs the tests.
# Both install what is missing first (Debian packages, then a virtual
# environment with the project in it), so they work on a fresh Debian 12
# machine as root.

PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
# A second environment on the libraries Debian 12 ships (python3-milter
# 1.0.5, python3-aiosmtpd 1.4.3, python3-ahocorasick 1.4.1 ...), the
# versions the Debian package runs with; .venv has the newest from PyPI.
DEBIAN_VENV := .venv-debian
APT_LIST := packaging/apt-packages.txt
STAMPS := .stamps

.PHONY: run test test-debian-libs deps lint bench clean deb piuparts

# The appliance in the foreground on the bundled configuration and database:
# the daemon (/run/clammail/clamd.ctl, 127.0.0.1:3310), the milter
# (127.0.0.1:8891) and the proxy (127.0.0.1:10025), one process each
# (clammail/supervisor.py; Ctrl-C stops them all).
run: deps
	install -d -m 0755 /var/log/clammail  # clamd, too, refuses a LogFile it cannot create
	$(BIN)/clammail run -c config/clammail.yaml --datadir clammail/data

# The whole suite on the newest libraries from PyPI, then the tests whose
# code leans on the libraries Debian 12 ships at older versions (matcher,
# archives, configuration, hash sets, milter, proxy, `clammail run`) on
# Debian's own: 80-160 s here instead of the whole suite a second time.
DEBIAN_LIBS_TESTS := tests/test_match_matcher.py tests/test_archive_formats.py \
	tests/test_archive_samples.py tests/test_archive_units.py tests/test_archive_hostile.py \
	tests/test_archive_limits.py tests/test_config_clamdconf.py tests/test_hash_formats.py \
	tests/test_loader.py tests/test_milter.py tests/test_milter_service.py \
	tests/test_milter_faults.py tests/test_proxy.py tests/test_package_defaults.py \
	tests/test_package_run.py
test: deps $(STAMPS)/venv-debian
	$(BIN)/python -m pytest -q
	$(DEBIAN_VENV)/bin/python -m pytest -q -p no:cacheprovider $(DEBIAN_LIBS_TESTS)

# The whole suite (or TESTS=...) on Debian 12's libraries.
TESTS ?= tests
test-debian-libs: deps $(STAMPS)/venv-debian
	$(DEBIAN_VENV)/bin/python -m pytest -q -p no:cacheprovider $(TESTS)

lint: deps
	$(BIN)/ruff check clammail tests

# clamd and clammail side by side (bench/bench_daemon.py; takes long on the
# 3.1M-signature database, which it builds on its first run).
bench: deps
	$(BIN)/python bench/bench_daemon.py

deps: $(STAMPS)/apt $(STAMPS)/venv

# The Debian package (packaging/build-deb: dpkg-buildpackage on a copy of
# the tree with packaging/debian as debian/, then lintian). The version is
# pyproject's plus the number of commits, so each commit's build upgrades
# the one before. The .deb lands in build/deb/.
DEB_DIR := build/deb
PROJECT_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DEB_VERSION = $(PROJECT_VERSION)+git$(shell git rev-list --count HEAD 2>/dev/null || echo 0)
deb: $(STAMPS)/apt
	packaging/build-deb . $(DEB_DIR) "$(DEB_VERSION)"

# piuparts in a clean Debian 12 chroot (packaging/piuparts): install and
# purge, and an upgrade from the build of PREVIOUS (default: the commit
# before). It debootstraps a chroot from the Debian mirror on its first run
# and installs the dependencies into it every run: minutes, so it is not
# part of `make test`.
PREVIOUS ?= HEAD~1
piuparts: deb
	packaging/piuparts $(DEB_DIR)/clammail_$(DEB_VERSION)_all.deb $(PREVIOUS) build/piuparts

# Debian packages: installed only when one of the list is missing. A line
# `package [arch ...]` is for those architectures only.
# Postfix is only there for the tests' private instances: installed fresh, it
# is preseeded "No configuration", so its installation asks nothing, writes
# no /etc/postfix/main.cf and starts no system mail server (an existing
# Postfix and its debconf answers are left alone).
$(STAMPS)/apt: $(APT_LIST)
	@mkdir -p $(STAMPS)
	@arch=$$(dpkg --print-architecture); \
	missing=$$(sed -e 's/#.*//' $(APT_LIST) | \
		awk -v arch="$$arch" 'NF == 0 { next } NF == 1 { print; next } \
			{ for (i = 2; i <= NF; i++) { a = $$i; gsub(/[][]/, "", a); if (a == arch) print $$1 } }' | \
		while read -r pkg; do \
		dpkg-query -W -f='$${Status}\n' "$$pkg" 2>/dev/null | grep -q '^install ok installed' || echo "$$pkg"; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		case " "$$(echo $$missing)" " in *" postfix "*) \
			echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections;; \
		esac; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

# The virtual environment, with the project installed in editable mode.
# The fast matcher needs no Python package: the engine binds Debian's
# libhyperscan5 itself (clammail/engine/match/libhs.py).
$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# Debian's python3 with its python3-* packages (packaging/apt-packages.txt);
# pip adds only what Debian 12 lacks (inflate64, ruff); the fast matcher is
# libhyperscan5 itself (clammail/engine/match/libhs.py).
$(STAMPS)/venv-debian: pyproject.toml $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	test -x $(DEBIAN_VENV)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(DEBIAN_VENV)
	$(DEBIAN_VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

clean:
	rm -rf $(VENV) $(DEBIAN_VENV) $(STAMPS) build *.egg-info .pytest_cache
