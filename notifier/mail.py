"""One e-mail attempt: over SMTP, or (no SMTP_HOST) as an .eml file in MAIL_OUTBOX_DIR."""

import html
import os
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import aiosmtplib

from notifier.webhooks import Attempt
from shared.domain.records import DeliveryRecord, UserRecord
from shared.settings import Settings

SMTP_TIMEOUT_S = 30


def message(delivery: DeliveryRecord, user: UserRecord, settings: Settings) -> EmailMessage:
    """Plain text and HTML; the subject names the task and its status, the body links to
    its dashboard page. The Message-ID is the delivery's: a retry is the same message."""
    task = delivery.payload["task"]
    link = f"{settings.public_url.rstrip('/')}/dashboard/tasks/{task['id']}"
    status = task["status"]
    mail = EmailMessage()
    mail["From"] = settings.mail_from
    mail["To"] = user.email or ""
    mail["Subject"] = f"Task \u201c{task['title']}\u201d is {status}"
    mail["Message-ID"] = f"<{delivery.id}@taskq>"
    mail["Date"] = formatdate(localtime=False)
    error = f"\nError:\n{task['error']}\n" if task.get("error") else ""
    mail.set_content(
        f"Your task \u201c{task['title']}\u201d ({task['id']}) is {status}.\n{error}\n"
        f"See it on the dashboard: {link}\n"
    )
    error_html = f"<pre>{html.escape(task['error'])}</pre>" if task.get("error") else ""
    mail.add_alternative(
        f"<p>Your task <strong>{html.escape(task['title'])}</strong> is <strong>{status}"
        f'</strong>.</p>{error_html}<p><a href="{html.escape(link)}">See it on the '
        "dashboard</a></p>",
        subtype="html",
    )
    return mail


async def attempt(delivery: DeliveryRecord, user: UserRecord, settings: Settings) -> Attempt:
    if not user.email:
        return Attempt(False, error="the user has no email address")
    mail = message(delivery, user, settings)
    if not settings.smtp_host:
        _write_eml(mail, Path(settings.mail_outbox_dir), delivery)
        return Attempt(True)
    try:
        await aiosmtplib.send(
            mail,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password or None,
            start_tls=settings.smtp_starttls,
            timeout=SMTP_TIMEOUT_S,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        return Attempt(False, error=f"{type(exc).__name__}: {exc}")
    return Attempt(True)


def _write_eml(mail: EmailMessage, outbox: Path, delivery: DeliveryRecord) -> None:
    """Atomically, named by the delivery: a retry rewrites the same file, never a second."""
    outbox.mkdir(parents=True, exist_ok=True)
    final = outbox / f"{delivery.id}.eml"
    partial = final.with_suffix(".eml.part")
    partial.write_bytes(bytes(mail))
    os.replace(partial, final)
