# clammail: `make run` starts the appliance, `make test` runs the tests.
# Both install what is missing first (Debian packages, then a virtual
# environment with the project in it), so they work on a fresh Debian 12
# machine as root.

PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
APT_LIST := packaging/apt-packages.txt
STAMPS := .stamps

.PHONY: run test deps lint bench clean

# The daemon in the foreground on the bundled configuration and database:
# /run/clammail/clamd.ctl and 127.0.0.1:3310 (Ctrl-C stops it).
run: deps
	install -d -m 0755 /var/log/clammail  # clamd, too, refuses a LogFile it cannot create
	$(BIN)/clammail daemon --foreground -c config/clamd.conf --datadir clammail/data

test: deps
	$(BIN)/python -m pytest -q

lint: deps
	$(BIN)/ruff check clammail tests

# clamd and clammail side by side (bench/bench_daemon.py; takes long on the
# 3.1M-signature database, which it builds on its first run).
bench: deps
	$(BIN)/python bench/bench_daemon.py

deps: $(STAMPS)/apt $(STAMPS)/venv

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

clean:
	rm -rf $(VENV) $(STAMPS) build *.egg-info .pytest_cache
