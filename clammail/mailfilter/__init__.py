"""What the milter and the SMTP proxy share: from a message to an action.

- `backends`: the clamd-protocol daemons a message can be scanned by, with
  failover and PING probing of the ones that failed;
- `scan`: one message streamed to a backend while it arrives, spooled so
  that it can be sent again to the next backend if the first one fails;
- `policy`: the verdict turned into an action, a reply and headers;
- `skip`: the rules that let a message through unscanned (LocalNet,
  AllowList, SkipAuthenticated);
- `metrics` and `summary`: the Prometheus counters and the per-message log
  line.

Nothing here knows pymilter or aiosmtpd: the milter and the proxy only
translate their callbacks into these calls.
"""
