"""Typed connection errors: one human sentence, the layer that failed, and what to do about it.

The hints are the seed checklist's troubleshooting steps, so chat, terminal and report all give
the squad the advice they already know, next to the precise cause.
"""

from __future__ import annotations

from enum import IntEnum

# The seed's "Troubleshooting" section, verbatim where it applies.
HINT_GATEWAY_NOT_RUNNING = (
    "Start IBKR Gateway",
    "Ensure it's in paper mode",
    "Verify port {port} is open",
    "Check firewall settings",
)
HINT_CONNECTION_DROPS = (
    "Check Gateway logs for errors",
    "Verify account credentials",
    "Check network stability",
    "Ensure paper trading account is active",
)
HINT_RECONNECT_FAILS = (
    "Check `max_reconnect_attempts` in config",
    "Verify `reconnect_delay` is appropriate",
    "Check for errors in client reconnection logic",
)
HINT_NOT_READY = (
    "Log in to the Gateway (it answers the API only after login)",
    "Look for a pending dialog on the Gateway: 'accept incoming connection' or the paper-account warning",
    "In Configure > Settings > API, enable 'ActiveX and Socket Clients' and trust 127.0.0.1",
)
HINT_WRONG_PORT = (
    "Check the port: IB Gateway uses 4002 (paper) / 4001 (live), TWS 7497 / 7496",
    "Make sure nothing else listens on port {port}",
)


class Layer(IntEnum):
    """How far a connection got, in order; a failure names the first layer not reached."""

    TCP_PORT = 1
    API_HANDSHAKE = 2
    API_READY = 3
    STARTUP_SYNC = 4
    ACCOUNT = 5
    IB_LINK = 6
    DATA_FARMS = 7

    @property
    def label(self) -> str:
        return {
            Layer.TCP_PORT: "TCP port",
            Layer.API_HANDSHAKE: "API handshake",
            Layer.API_READY: "API ready (logged in)",
            Layer.STARTUP_SYNC: "start-up sync",
            Layer.ACCOUNT: "paper account",
            Layer.IB_LINK: "link to IB servers",
            Layer.DATA_FARMS: "data farms",
        }[self]


class GatewayError(Exception):
    """Base of every error IBKRClient raises; ``str()`` is one sentence a person can act on."""

    layer: Layer = Layer.TCP_PORT
    hints: tuple[str, ...] = HINT_GATEWAY_NOT_RUNNING

    def __init__(self, message: str, *, host: str = "", port: int = 0) -> None:
        super().__init__(message)
        self.host = host
        self.port = port

    @property
    def hint_lines(self) -> tuple[str, ...]:
        return tuple(h.format(port=self.port or "the API") for h in self.hints)


class HostUnresolvable(GatewayError):
    hints = ("Check the host name in config.yaml (ibkr.host)", "Use 127.0.0.1 when the Gateway runs on this machine")


class GatewayRefused(GatewayError):
    """Nothing listens on the port: the Gateway is not running (or not on this port)."""


class ConnectTimeout(GatewayError):
    """The TCP connect itself timed out: a firewall drops packets, or the host is wrong."""


class HandshakeTimeout(GatewayError):
    """The port accepts connections but never answers the API handshake."""

    layer = Layer.API_HANDSHAKE
    hints = HINT_WRONG_PORT + HINT_NOT_READY[2:]


class NotAnApiPort(GatewayError):
    """Something answered, but not in the TWS API protocol (an HTTP server, say)."""

    layer = Layer.API_HANDSHAKE
    hints = HINT_WRONG_PORT


class GatewayClosedConnection(GatewayError):
    """The Gateway closed the socket before the API was ready."""

    layer = Layer.API_HANDSHAKE
    hints = (
        "Add this machine to the Gateway's Trusted IPs (Configure > Settings > API)",
        "Use a client id no other program uses",
        *HINT_CONNECTION_DROPS[:1],
    )


class ConnectionRejected(GatewayError):
    """The Gateway closed (or reset) the socket before answering the handshake: its own refusal."""

    layer = Layer.API_HANDSHAKE
    hints = (
        "Add this machine's address to the Gateway's Trusted IPs (Configure > Settings > API)",
        "Untick 'Allow connections from localhost only' when gwbot runs on another machine",
        "Check ibkr.host: it must be the Gateway's machine as the Gateway sees it",
    )


class ApiNotReady(GatewayError):
    """Handshake answered, but no accounts / next order id: not logged in, or a dialog is pending."""

    layer = Layer.API_READY
    hints = HINT_NOT_READY


class ClientIdInUse(GatewayError):
    """Error 326: another API client already uses this client id."""

    layer = Layer.API_READY
    hints = (
        "Give this client a unique client id (ibkr.client_id)",
        "Close the other program using it, or wait: the Gateway can hold an id briefly after its client left",
    )


class LiveAccountRefused(GatewayError):
    """The paper-mode guard: a managed account that is not a paper account."""

    layer = Layer.ACCOUNT
    hints = (
        "Log the Gateway in to the paper account",
        "Set ibkr.allow_live: true only if you really mean to test a live account",
    )


class NotConnected(GatewayError):
    hints = HINT_CONNECTION_DROPS


class PingTimeout(GatewayError):
    """A reqCurrentTime heartbeat was not answered in time: the Gateway is frozen or overloaded."""

    layer = Layer.API_READY
    hints = HINT_CONNECTION_DROPS


def is_paper_account(account: str) -> bool:
    """IBKR paper accounts start with 'D' (DU…, DF…); live ones with U, F, I."""
    return account.upper().startswith("D")
