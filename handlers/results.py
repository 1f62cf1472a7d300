"""A finished run, posted to the chat through the outbox: summary, report (message or .md file), soak
chart or drill timeline."""

from __future__ import annotations

import asyncio
import html
import logging
import re

from bot import report
from bot.chart import drill_chart, soak_chart
from bot.checks.drill import Stage
from bot.outbox import Outbox
from handlers.telegram_html import MESSAGE_LIMIT, FormatError, parse_html, utf16_len
from storage import OutMessage, RunRecord

log = logging.getLogger(__name__)
_INLINE = re.compile(r"`([^`\n]+)`|\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`\n]+)`")


def telegram_html(markdown: str) -> str:
    """The report's markdown (## headings, **bold**, _italic line_, - lists, `code`, ``` blocks) as
    Telegram HTML; everything else is escaped, so a value holding <, & or * shows as typed."""
    out: list[str] = []
    block: list[str] | None = None  # lines of an open ``` block
    for line in markdown.splitlines():
        if line.startswith("```"):
            if block is None:
                block = []
            else:
                out.append("<pre>" + html.escape("\n".join(block), quote=False) + "</pre>")
                block = None
        elif block is not None:
            block.append(line)
        elif heading := re.match(r"#{1,6} (.*)", line):
            out.append(f"<b>{_inline(heading.group(1), _CODE)}</b>")
        elif len(line) > 2 and line.startswith("_") and line.endswith("_"):
            out.append(f"<i>{_inline(line[1:-1])}</i>")
        elif line.startswith("- "):
            out.append("• " + _inline(line[2:]))
        else:
            out.append(_inline(line))
    if block is not None:  # an unclosed block: still show its lines, as code
        out.append("<pre>" + html.escape("\n".join(block), quote=False) + "</pre>")
    return "\n".join(out)


def _inline(text: str, pattern: re.Pattern[str] = _INLINE) -> str:
    parts, at = [], 0
    for m in pattern.finditer(text):
        parts.append(html.escape(text[at:m.start()], quote=False))
        bold = m.group(2) if pattern.groups > 1 else None
        parts.append(f"<code>{html.escape(m.group(1), quote=False)}</code>" if bold is None
                     else f"<b>{_inline(bold, _CODE)}</b>")  # inside bold only code: no <b> in <b>
        at = m.end()
    return "".join(parts) + html.escape(text[at:], quote=False)


def fits_in_message(telegram_html_text: str) -> bool:
    """Whether Telegram takes it as one message: measured on the text the markup leaves."""
    try:
        plain, _ = parse_html(telegram_html_text)
    except FormatError:
        log.exception("report converted to HTML Telegram would refuse; sending it as a file")
        return False
    return 0 < utf16_len(plain) <= MESSAGE_LIMIT


def report_message(run: RunRecord, compared: str = "") -> OutMessage:
    text = report.markdown(run, compared)
    formatted = telegram_html(text)
    if fits_in_message(formatted):
        return OutMessage.html(formatted)
    return OutMessage.document(text.encode(), f"gwbot-run-{run.id}-{run.kind}.md",
                               f"Report for run #{run.id} ({run.kind}, {run.status})")


async def send_report(outbox: Outbox, chat_id: int, run: RunRecord, compared: str = "") -> None:
    await outbox.enqueue(chat_id, [report_message(run, compared)])


async def post_results(outbox: Outbox, chat_id: int, run: RunRecord, first: tuple[OutMessage, ...] = (),
                       compared: str = "") -> None:
    """Everything about a finished run, stored in one go: it all arrives, in this order, or none is lost.
    ``compared``: the run beside this Gateway's earlier ones (:func:`bot.report.compared`)."""
    messages = [*first, OutMessage.plain(report.summary(run, compared)), report_message(run, compared)]
    for check in run.checks:
        # matplotlib is CPU work: off the loop, so the chat keeps answering meanwhile.
        if check.name == "soak" and check.series:
            png = await asyncio.to_thread(soak_chart, check, f"Run #{run.id}: heartbeat RTT ({check.status})")
            messages.append(OutMessage.photo(png, f"Soak heartbeat RTT, run #{run.id}", f"gwbot-run-{run.id}-soak.png"))
        elif check.name == "drill" and check.metric(Stage.ACCEPTED.metric) is not None:
            png = await asyncio.to_thread(drill_chart, check, f"Run #{run.id} on {run.gateway}: drill ({check.status})")
            messages.append(OutMessage.photo(png, f"Drill stage timeline, run #{run.id}",
                                             f"gwbot-run-{run.id}-drill.png"))
    await outbox.enqueue(chat_id, messages)
