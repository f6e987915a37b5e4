"""`clammail daemon`: clamd's command line, start-up, signals, logging and reload.

Start-up follows clamd: read the configuration (clamd.conf, or the `daemon`
section of the YAML file), open the log, bind the sockets (or take them from
systemd), drop privileges to User, load the database, fork the scan workers,
then daemonize unless Foreground and write the PidFile.

Signals as clamd: SIGTERM/SIGINT exit cleanly after in-flight scans (bounded),
SIGHUP reopens the log file, SIGUSR2 reloads the database. Reloads (RELOAD,
SIGUSR2, SelfCheck finding changed database files) load the new database in
a new generation's loader process (workers.WorkerPool) while the old
generation keeps serving; a database that fails to load leaves the old one
in place, and the log says why. The daemon process itself never holds a
database: a retired generation's processes end and give their memory back.

Where clamd's threads become processes, the options keep their meaning:
MaxThreads bounds the scan workers (never more than the cores: more
processes would only cost memory); IdleTimeout is how long an idle worker
waits for a job before it exits (clamd's idle scan threads do the same),
except that one worker is always kept, so that a quiet daemon answers its
next scan without a fork; MaxQueue bounds the scans waiting or running, and
a session's scans in flight. Unlike clamd, which stops accepting once MaxQueue
connections are open, the daemon serves as many connections as its
descriptor limit allows (it lifts the soft limit to the hard one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time

from clammail import __version__
from clammail.clamd import pathscan
from clammail.clamd.server import Server
from clammail.clamd.workers import LoadFailed, WorkerPool
from clammail.config.clamdconf import Config, ConfigError
from clammail.service.log import ServiceLog
from clammail.service.process import (
    StartError,
    daemonize,
    drop_privileges,
    remove_file,
    sd_notify,
    write_pid_file,
)
from clammail.service.sockets import (
    SD_LISTEN_FDS_START,
    bind_tcp,
    bind_unix,
    listen_fds,
    raise_descriptor_limit,
)

DEFAULT_CONFIG = "/etc/clammail/clamd.conf"
# Where the compiled database is kept between starts (see --cache-dir); a
# directory the daemon cannot write or that others can is simply not used.
DEFAULT_CACHE_DIR = "/var/cache/clammail"
SHUTDOWN_GRACE = 10.0  # seconds in-flight scans get on SIGTERM/SHUTDOWN

# -- sockets ------------------------------------------------------------


def systemd_sockets(count: int, log: ServiceLog) -> list[tuple[socket.socket, str]]:
    """The sockets clamd takes from systemd socket activation (LISTEN_PID, LISTEN_FDS).

    As clamd (localserver.c, tcpserver.c): at most two descriptors, from
    SD_LISTEN_FDS_START on; the first listening AF_UNIX stream socket is the
    local socket, the first listening AF_INET/AF_INET6 stream socket the TCP
    one; anything else is left alone. LocalSocket, TCPSocket and TCPAddr
    are not used then, and the sockets belong to systemd: they are neither
    chmod-ed nor removed.
    """
    if count > 2:
        # clamd's TCP set-up looks at them first, so its message is the one seen.
        raise StartError("TCP: Received more than two file descriptors from systemd.")
    local = tcp = None
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # not a socket
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.type != socket.SOCK_STREAM or not listening:
            sock.detach()
            continue
        if sock.family == socket.AF_UNIX and local is None:
            local = sock
        elif sock.family in (socket.AF_INET, socket.AF_INET6) and tcp is None:
            tcp = sock
        else:
            sock.detach()
    result = []
    if tcp is not None:
        family = "AF_INET6" if tcp.family == socket.AF_INET6 else "AF_INET"
        log.info(f"TCP: Received {family} SOCK_STREAM socket from systemd.")
        result.append((tcp, "tcp"))
    else:
        log.info("TCP: No tcp AF_INET/AF_INET6 SOCK_STREAM socket received from systemd.")
    if local is not None:
        log.info("LOCAL: Received AF_UNIX SOCK_STREAM socket from systemd.")
        result.append((local, "unix"))
    else:
        log.info("LOCAL: No local AF_UNIX SOCK_STREAM socket received from systemd.")
    return result


def bind_local(config: Config, log: ServiceLog) -> socket.socket:
    return bind_unix(config["LocalSocket"], group=config["LocalSocketGroup"],
                     mode=config["LocalSocketMode"], fix_stale=bool(config["FixStaleSocket"]),
                     backlog=int(config["MaxConnectionQueueLength"]), log=log)


def bind_tcp_listeners(config: Config, log: ServiceLog) -> list[socket.socket]:
    return bind_tcp(int(config["TCPSocket"]), config["TCPAddr"] or [None],
                    int(config["MaxConnectionQueueLength"]), log)


# -- the daemon -----------------------------------------------------------


class Daemon:
    def __init__(self, config: Config, log: ServiceLog, database_paths: list[str] | None = None,
                 cache_dir: str | None = None, fallback_datadir: str | None = None):
        self.config = config
        self.log = log
        # The compiled-database cache (clammail.signatures.dbcache): a restart
        # or RELOAD with unchanged database files maps it instead of parsing.
        self.cache_dir = cache_dir
        # Absolute: a daemon changes to / when it detaches, and reloads later.
        self.database_paths = [os.path.abspath(p) for p in
                               (database_paths or [config["DatabaseDirectory"]])]
        # --fallback-datadir: loaded while the configured directory holds no
        # database (a fresh install before freshclam's first download);
        # SelfCheck watches the configured one and switches when it fills.
        self.fallback_datadir = fallback_datadir and os.path.abspath(fallback_datadir)
        self.walk_options = pathscan.WalkOptions.from_config(config)
        self.pool: WorkerPool | None = None
        self.info = None  # the serving generation's DatabaseInfo
        self.generation = 0
        self._retiring: set[WorkerPool] = set()
        self._reload_task: asyncio.Task | None = None
        self._reload_again = False
        self._db_stamp: dict[str, tuple] = {}
        self.server = None
        self.socket_path: str | None = None
        self.socket_activated = False  # listening sockets from systemd
        self.started = time.time()

    # -- database -------------------------------------------------------

    def load_engine(self):
        """Load the database and build an engine: (engine, DatabaseInfo).

        Runs in a generation's loader process (see workers.WorkerPool), never
        in the daemon's own.
        """
        from clammail.engine import Engine, ScanOptions
        from clammail.signatures.common import LoadOptions
        from clammail.signatures.loader import load_database

        options = LoadOptions(
            detect_pua=bool(self.config["DetectPUA"]),
            official_only=bool(self.config["OfficialDatabaseOnly"]),
            bytecode=bool(self.config["Bytecode"]),
            exclude_pua=tuple(self.config["ExcludePUA"] or ()),
            include_pua=tuple(self.config["IncludePUA"] or ()),
        )
        database = load_database(self.paths_to_load(), options, cache_dir=self.cache_dir)
        if database.info.signatures == 0:
            raise ValueError("No signatures loaded (the database is empty)")
        engine = Engine(database, ScanOptions.from_mapping(self.config.engine_options()))
        return engine, database.info

    def paths_to_load(self) -> list[str]:
        from clammail.signatures.loader import holds_databases

        if self.fallback_datadir and not any(
                os.path.isfile(p) or holds_databases(p) for p in self.database_paths):
            return [self.fallback_datadir]
        return self.database_paths

    def _stat_database(self) -> dict[str, tuple]:
        stamp = {}
        for base in self.database_paths:
            paths = [base]
            if os.path.isdir(base):
                try:
                    paths = [os.path.join(base, n) for n in sorted(os.listdir(base))]
                except OSError:
                    paths = []
            for path in paths:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                stamp[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return stamp

    def new_generation(self) -> tuple[WorkerPool, dict[str, tuple]]:
        """A pool for the next database generation (not loaded yet), and the
        database files' state it will load."""
        self.generation += 1
        pool = WorkerPool(self.load_engine, self.walk_options, self._pool_size(), self.generation,
                          idle_timeout=float(self.config["IdleTimeout"]))
        pool.on_broken = self._generation_broken
        return pool, self._stat_database()

    def install(self, pool: WorkerPool, info, stamp) -> None:
        """`pool` serves from now on; the one before finishes its jobs and ends."""
        old, self.pool = self.pool, pool
        self.info = info
        self._db_stamp = stamp
        if old is not None:
            old.hand_over()
            self._retire(old)

    def _pool_size(self) -> int:
        # MaxThreads bounds concurrent scans as in clamd; more processes than
        # cores only cost memory.
        return max(1, min(int(self.config["MaxThreads"]), os.cpu_count() or 1))

    def _retire(self, pool: WorkerPool) -> None:
        self._retiring.add(pool)

        async def wait_and_close():
            while pool.active:
                await asyncio.sleep(0.05)
            await pool.close(timeout=SHUTDOWN_GRACE)
            self._retiring.discard(pool)

        asyncio.get_running_loop().create_task(wait_and_close())

    def _generation_broken(self, pool: WorkerPool) -> None:
        if pool is not self.pool or self._stopping is None or self._stopping.done():
            return
        self.log.error(f"The loader process of database generation {pool.generation} ended: "
                       "loading the database again")
        self.request_reload("loader process lost")

    def version_string(self) -> str:
        info = self.info
        if info is not None and info.version:
            return f"clammail {__version__}/{info.version}/{info.build_time}"
        return f"clammail {__version__}"

    def stats_text(self, server) -> str:
        """STATS in clamd's layout (thrmgr_printstats), which clamdtop parses.

        Worker processes stand for clamd's scan threads: "live" counts them,
        "idle" those waiting for a job, and each is listed as clamd lists its
        threads: the command it runs and for how long, or IDLE and since when.
        Jobs that wait for a worker are the queue.
        """
        pool = self.pool
        now = time.monotonic()
        lines = ["POOLS: 1", "", "STATE: VALID PRIMARY"]
        live = len(pool.workers) if pool else 0
        idle = pool.idle if pool else 0
        lines.append(
            f"THREADS: live {live}  idle {idle} max {self.config['MaxThreads']} "
            f"idle-timeout {self.config['IdleTimeout']}"
        )
        tasks = list(server.running.values())
        waits = [now - t.queued for t in tasks if t.started is None]
        queue = f"QUEUE: {len(waits)} items"
        if waits:
            queue += (f" min_wait: {min(waits):.6f} max_wait: {max(waits):.6f}"
                      f" avg_wait: {sum(waits) / len(waits):.6f}")
        lines.append(queue)
        lines.append("\tSTATS 0.000000 ")
        for task in tasks:
            if task.started is not None:
                lines.append(f"\t{task.command} {now - task.started:.6f} {task.name}")
        for waited in (pool.idle_times() if pool else []):
            lines.append(f"\tIDLE {waited:.6f} ")
        lines.append("")
        used = _rss_mb([os.getpid()] + (pool.pids() + [pool.loader_pid] if pool else []))
        lines.append(
            "MEMSTATS: heap N/A mmap N/A used N/A free N/A releasable N/A "
            f"pools 1 pools_used {used:.3f}M pools_total {used:.3f}M"
        )
        lines.append("END")
        return "\n".join(lines)

    # -- events ---------------------------------------------------------

    async def virus_event(self, path: str, name: str) -> None:
        """clamd's VirusEvent for a detection, if configured."""
        command = self.config["VirusEvent"]
        if not command:
            return
        text = command.replace("%v", name).replace("%f", path)
        env = {"CLAM_VIRUSEVENT_FILENAME": path, "CLAM_VIRUSEVENT_VIRUSNAME": name}
        if "PATH" in os.environ:
            env["PATH"] = os.environ["PATH"]
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", text, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()
        except OSError as exc:
            self.log.error(f"VirusEvent: fork failed: {exc}")

    # -- control ----------------------------------------------------------

    def request_shutdown(self, why: str) -> None:
        self.log.info(f"{why}: shutting down.")
        if self._stopping is not None and not self._stopping.done():
            self._stopping.set_result(why)

    def request_reload(self, why: str) -> None:
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return
        self.log.info(f"Reading databases from {', '.join(self.paths_to_load())} ({why})")
        self._reload_task = asyncio.get_running_loop().create_task(self._reload())
        self._reload_task.add_done_callback(self._reload_done)

    def _reload_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error(f"reload: failed: {task.exception()!r}")

    async def _reload(self) -> None:
        if not self.config["ConcurrentDatabaseReload"] and self.pool is not None:
            # Blocking reload, as clamd: stop scanning while loading.
            while self.pool.pending:
                await asyncio.sleep(0.05)
        pool, stamp = self.new_generation()
        try:
            info = await pool.start()
        except LoadFailed as exc:
            self.log.error(f"reload: Database load failed: {exc}")
            self.log.error("reload: keeping the database already loaded")
            self._db_stamp = self._stat_database()
            if self.pool is not None and self.pool.broken and not self.pool.workers:
                self.pool.hand_over()  # nothing can serve the jobs waiting there
        except BaseException:
            pool.kill_now()
            raise
        else:
            self.install(pool, info, stamp)
            for warning in info.warnings:
                self.log.warning(warning)
            self.log.info(f"Database correctly reloaded ({info.signatures} signatures)")
        if self._reload_again:
            self._reload_again = False
            # Once this task is done: request_reload from inside it would
            # only queue the reload again, and nothing would run it.
            asyncio.get_running_loop().call_soon(self.request_reload, "queued reload")

    async def _selfcheck(self, interval: int) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._stat_database() != self._db_stamp:
                self.log.info("SelfCheck: Database modification detected. Forcing reload.")
                self.request_reload("SelfCheck")
            else:
                self.log.info("SelfCheck: Database status OK.")

    _stopping: asyncio.Future | None = None

    async def serve(self, listeners: list[tuple[socket.socket, str]]) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = loop.create_future()
        self.server = Server(self)
        self.server.close_listeners = not self.socket_activated
        for sock, kind in listeners:
            self.server.add_listener(sock, kind)
        loop.add_signal_handler(signal.SIGTERM, self.request_shutdown, "SIGTERM caught")
        loop.add_signal_handler(signal.SIGINT, self.request_shutdown, "SIGINT caught")
        loop.add_signal_handler(signal.SIGHUP, self.log.reopen)
        loop.add_signal_handler(signal.SIGUSR2, self.request_reload, "SIGUSR2")
        loop.add_signal_handler(signal.SIGPIPE, lambda: None)
        self.server.start()
        checker = None
        if int(self.config["SelfCheck"]):
            checker = loop.create_task(self._selfcheck(int(self.config["SelfCheck"])))
        await self._stopping
        if checker is not None:
            checker.cancel()
        await self.server.stop_accepting()
        await self.server.drain(SHUTDOWN_GRACE)
        if self._reload_task is not None:
            self._reload_task.cancel()
        pools = [p for p in [self.pool, *self._retiring] if p is not None]
        for pool in pools:
            await pool.close(timeout=2.0)


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total / (1024 * 1024)


# -- start-up ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clammail daemon", add_help=False,
                                description="The clamd-compatible scan daemon.")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-V", "--version", action="store_true")
    p.add_argument("-c", "--config-file", default=None, metavar="FILE")
    p.add_argument("-F", "--foreground", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--datadir", default=None, metavar="DIRECTORY")
    p.add_argument("--fallback-datadir", default=None, metavar="DIRECTORY")
    p.add_argument("-p", "--pid", default=None, metavar="FILE")
    p.add_argument("--fail-if-cvd-older-than", default=None, metavar="DAYS")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, metavar="DIRECTORY")
    p.add_argument("--no-cache-dir", dest="cache_dir", action="store_const", const=None)
    return p


HELP = """\
                      Clam AntiVirus: Daemon (clammail {version})

    --help                   -h             Show this help
    --version                -V             Show version number
    --foreground             -F             Run in foreground; do not daemonize
    --debug                                 Enable debug mode
    --config-file=FILE       -c FILE        Read configuration from FILE
                                            (clamd.conf syntax, or YAML: .yaml/.yml)
    --datadir=DIRECTORY                     Load signatures from DIRECTORY
    --fallback-datadir=DIRECTORY            Load DIRECTORY while the configured one
                                            holds no database (SelfCheck switches)
    --pid=FILE               -p FILE        Write the daemon's pid to FILE
    --cache-dir=DIRECTORY                   Keep the compiled database there
                                            (default {cache_dir})
    --no-cache-dir                          Parse the databases at every load
"""


def load_config(path: str) -> Config:
    if path.endswith((".yaml", ".yml")):
        from clammail.config.yamlconf import read_yaml_config

        return read_yaml_config(path, "daemon")
    from clammail.config.clamdconf import read_clamd_conf

    return read_clamd_conf(path)


def default_config_path() -> str:
    for candidate in (DEFAULT_CONFIG, "/etc/clammail/clammail.yaml"):
        if os.path.exists(candidate):
            return candidate
    return DEFAULT_CONFIG


def main(argv: list[str]) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if rest:
        sys.stderr.write(f"ERROR: Unknown option passed: {' '.join(rest)}\n")
        return 1
    if args.help:
        sys.stdout.write(HELP.format(version=__version__, cache_dir=DEFAULT_CACHE_DIR))
        return 0
    if args.version:
        print(f"clammail {__version__}")
        return 0
    path = args.config_file or default_config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        sys.stderr.write(f"ERROR: Can't open/parse the config file {path}\n")
        return 1
    if args.datadir:
        config.values["DatabaseDirectory"] = args.datadir
    if args.pid:
        config.values["PidFile"] = args.pid
    if args.foreground:
        config.values["Foreground"] = True
    try:
        return run(config, debug=args.debug, cache_dir=args.cache_dir,
                   fallback_datadir=args.fallback_datadir)
    except StartError as exc:
        if not exc.shown:
            sys.stderr.write(f"ERROR: {exc}\n")
        return 1


def run(config: Config, debug: bool = False, cache_dir: str | None = None,
        fallback_datadir: str | None = None) -> int:
    foreground = bool(config["Foreground"])
    log = ServiceLog(config, foreground, debug)
    try:
        return _run(config, log, foreground, cache_dir, fallback_datadir)
    except StartError as exc:
        # As clamd: the reason goes to the log (and with it to stderr in the foreground).
        log.error(str(exc))
        exc.shown = log.to_stderr
        log.close()
        raise


def _run(config: Config, log: ServiceLog, foreground: bool, cache_dir: str | None = None,
         fallback_datadir: str | None = None) -> int:
    for warning in config.warnings:
        sys.stderr.write(f"WARNING: {warning}\n")
        log.warning(warning)
    log.info(f"+++ Started at {time.asctime()}")
    raise_descriptor_limit()
    passed = listen_fds()
    log.info(f"Received {passed} file descriptor(s) from systemd.")
    socket_path = None
    if passed:
        listeners = systemd_sockets(passed, log)
    else:
        if not config["LocalSocket"] and config["TCPSocket"] is None:
            raise StartError("Please define server type (local and/or TCP).")
        listeners = []
        if config["TCPSocket"] is not None:
            listeners += [(s, "tcp") for s in bind_tcp_listeners(config, log)]
        if config["LocalSocket"]:
            listeners.append((bind_local(config, log), "unix"))
            socket_path = config["LocalSocket"]
    if not listeners:
        raise StartError("Not listening on any interfaces")
    drop_privileges(config["User"], log, own_files=(config["LogFile"], config["PidFile"]),
                    own_dirs=(os.path.dirname(config["PidFile"] or ""),
                              os.path.dirname(socket_path or "")))
    daemon = Daemon(config, log, cache_dir=cache_dir, fallback_datadir=fallback_datadir)
    daemon.socket_path = socket_path
    daemon.socket_activated = bool(passed)
    log.info(f"Reading databases from {', '.join(daemon.paths_to_load())}")
    pool, stamp = daemon.new_generation()
    try:
        info = pool.load_blocking()
    except LoadFailed as exc:
        _cleanup(config, socket_path)
        raise StartError(f"Can't load {', '.join(daemon.database_paths)}: {exc}") from None
    for warning in info.warnings:  # skipped files and rules, as clamd warns
        log.warning(warning)
    log.info(f"Loaded {info.signatures} signatures.")
    if not foreground:
        daemonize()(True)  # the database is loaded: the starting process may go
    write_pid_file(config["PidFile"], log)
    sd_notify("READY=1")
    try:
        asyncio.run(_serve(daemon, pool, info, stamp, listeners))
    finally:
        for sock, _ in listeners:
            sock.close()
        _cleanup(config, socket_path)
        log.info(f"--- Stopped at {time.asctime()}")
        log.close()
    return 0


async def _serve(daemon: Daemon, pool: WorkerPool, info, stamp, listeners) -> None:
    await pool.open()
    daemon.install(pool, info, stamp)
    await daemon.serve(listeners)


def _cleanup(config: Config, socket_path: str | None) -> None:
    remove_file(socket_path)
    remove_file(config["PidFile"])
