"""What every long-running part of clammail shares: the daemon, the milter, the proxy.

- `log`: the log file with clamd's options (LogFile, LogTime, LogFileMaxSize,
  LogRotate, LogSyslog, LogFacility, LogVerbose), SIGHUP reopening;
- `sockets`: unix and TCP listeners with clamd's rules (stale sockets, group,
  mode), systemd socket activation, the descriptor limit;
- `process`: start-up errors, privilege drop, daemonizing, the pid file and
  systemd's readiness notification.

Nothing here knows about scanning or mail.
"""
