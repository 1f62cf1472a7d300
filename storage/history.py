"""A check's figures over a Gateway's earlier runs: what a new result is compared with."""

from __future__ import annotations

from storage.models import Store


class HistoryStore(Store):
    async def earlier(self, gateway: str, check: str, metric: str, before_run: int, limit: int) -> list[float]:
        """``metric`` of the last ``limit`` ``check``s on ``gateway`` in runs before ``before_run``
        that recorded it, newest first (a check that stopped before measuring it is left out)."""
        rows = await self._db.execute_fetchall(
            "SELECT json_extract(m.value, '$[1]') AS v FROM runs r JOIN checks c ON c.run_id = r.id, "
            "json_each(c.metrics) m WHERE r.gateway = ? AND c.name = ? AND r.id < ? "
            "AND json_extract(m.value, '$[0]') = ? ORDER BY r.id DESC, c.seq DESC LIMIT ?",
            (gateway, check, before_run, metric, limit))
        return [float(r["v"]) for r in rows if r["v"] is not None]
