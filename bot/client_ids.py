"""Which client id each part of gwbot uses on a Gateway, decided in one place.

A Gateway refuses a second API client with an id already in use (326), and can hold an id for a
while after its client left; so every part that connects on its own gets its own offset from the
configured id: checks use the id itself, the watch, /status and the errors matrix their own.
Config load refuses a set of Gateways whose ids would collide (bot/config.py).
"""

from __future__ import annotations

from enum import IntEnum

CLIENT_ID_MAX = 2**31 - 1  # the TWS API's client id is a signed 32-bit integer


class ClientRole(IntEnum):
    CHECK = 0
    DRILL = 600  # the drill's observer, timing the API's return beside the check's own client
    WATCH = 700
    STATUS = 800
    ERRORS_MATRIX = 900
