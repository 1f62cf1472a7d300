"""A finished run, posted to the chat: summary, report (message or .md file), soak chart."""

from __future__ import annotations

import asyncio
import logging

from telegram import Bot

from bot import report
from bot.chart import soak_chart
from storage import RunRecord

log = logging.getLogger(__name__)
# Telegram allows 4096 characters; longer reports go as a document.
MESSAGE_LIMIT = 3500


def report_file_name(run: RunRecord) -> str:
    return f"gwbot-run-{run.id}-{run.kind}.md"


async def send_report(bot: Bot, chat_id: int, run: RunRecord) -> None:
    text = report.markdown(run)
    if len(text) <= MESSAGE_LIMIT:
        await bot.send_message(chat_id, text)
    else:
        await bot.send_document(chat_id, text.encode(), filename=report_file_name(run),
                                caption=f"Report for run #{run.id} ({run.kind}, {run.status})")


async def send_logs(bot: Bot, chat_id: int, run: RunRecord) -> bool:
    if not run.logs:
        return False
    await bot.send_document(chat_id, report.log_text(run).encode(), filename=f"gwbot-run-{run.id}.log",
                            caption=f"Log of run #{run.id}: {len(run.logs)} lines")
    return True


async def post_results(bot: Bot, chat_id: int, run: RunRecord) -> None:
    await bot.send_message(chat_id, report.summary(run))
    await send_report(bot, chat_id, run)
    for check in run.checks:
        if check.name == "soak" and check.series:
            # matplotlib is CPU work: off the loop, so the chat keeps answering meanwhile.
            png = await asyncio.to_thread(soak_chart, check, f"Run #{run.id}: heartbeat RTT ({check.status})")
            await bot.send_photo(chat_id, png, caption=f"Soak heartbeat RTT, run #{run.id}",
                                 filename=f"gwbot-run-{run.id}-soak.png")
