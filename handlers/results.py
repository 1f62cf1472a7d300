"""A finished run, posted to the chat through the outbox: summary, report (message or .md file), soak chart."""

from __future__ import annotations

import asyncio
import logging

from bot import report
from bot.chart import soak_chart
from bot.outbox import Outbox
from storage import OutMessage, RunRecord

log = logging.getLogger(__name__)
# Telegram allows 4096 characters; longer reports go as a document.
MESSAGE_LIMIT = 3500


def report_file_name(run: RunRecord) -> str:
    return f"gwbot-run-{run.id}-{run.kind}.md"


def report_message(run: RunRecord) -> OutMessage:
    text = report.markdown(run)
    if len(text) <= MESSAGE_LIMIT:
        return OutMessage.plain(text)
    return OutMessage.document(text.encode(), report_file_name(run),
                               f"Report for run #{run.id} ({run.kind}, {run.status})")


async def send_report(outbox: Outbox, chat_id: int, run: RunRecord) -> None:
    await outbox.enqueue(chat_id, [report_message(run)])


async def send_logs(outbox: Outbox, chat_id: int, run: RunRecord) -> bool:
    if not run.logs:
        return False
    await outbox.enqueue(chat_id, [OutMessage.document(report.log_text(run).encode(), f"gwbot-run-{run.id}.log",
                                                       f"Log of run #{run.id}: {len(run.logs)} lines")])
    return True


async def post_results(outbox: Outbox, chat_id: int, run: RunRecord, first: tuple[OutMessage, ...] = ()) -> None:
    """Everything about a finished run, stored in one go: it all arrives, in this order, or none is lost."""
    messages = [*first, OutMessage.plain(report.summary(run)), report_message(run)]
    for check in run.checks:
        if check.name == "soak" and check.series:
            # matplotlib is CPU work: off the loop, so the chat keeps answering meanwhile.
            png = await asyncio.to_thread(soak_chart, check, f"Run #{run.id}: heartbeat RTT ({check.status})")
            messages.append(OutMessage.photo(png, f"Soak heartbeat RTT, run #{run.id}"))
    await outbox.enqueue(chat_id, messages)
