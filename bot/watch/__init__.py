"""The always-on watch: one watcher per Gateway, a pure decision engine, the IBKR
schedule, uptime. Core code: no Telegram imports; alerts leave through an ``AlertSink``."""
