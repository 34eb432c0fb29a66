"""Reply attribution: each inbound SMS (a reply, a STOP) is tied to the latest outbound
message to the same number within a window before it, and that message is marked as
replied to or opted out. Imports run it after loading messages; live webhooks, which
deliver replies one by one, need the very same rule."""
from __future__ import annotations

REPLY_WINDOW_S = 7 * 86400     # a reply answers an outbound message at most this much older


def attribute_replies(conn, window_s: int = REPLY_WINDOW_S) -> int:
    """Attribute each not-yet-attributed inbound message to the latest outbound message to
    the same number within the window before it, then mark those outbound messages as
    replied to (a reply that is not a keyword) or opted out (an opt-out keyword). Inbound
    replies move to the campaign of the message they answer."""
    # Few replies, many messages: scan the messages once against the open replies (SQLite
    # builds a temporary index on the small side) rather than index every recipient.
    conn.execute("DROP TABLE IF EXISTS temp.open_replies")
    conn.execute(
        """CREATE TEMP TABLE open_replies AS
           SELECT id, recipient, sent_at FROM messages
           WHERE direction = 'inbound' AND reply_to IS NULL AND recipient IS NOT NULL""")
    n = 0
    if conn.execute("SELECT COUNT(*) FROM temp.open_replies").fetchone()[0]:
        conn.execute("CREATE INDEX temp.open_replies_recipient ON open_replies(recipient)")
        conn.execute(
            """
            UPDATE messages AS i SET reply_to = best.outbound_id
            FROM (
                SELECT r.id AS reply_id, o.id AS outbound_id,
                       ROW_NUMBER() OVER (PARTITION BY r.id
                                          ORDER BY o.sent_at DESC, o.id DESC) AS rank
                FROM messages AS o JOIN temp.open_replies AS r ON o.recipient = r.recipient
                WHERE o.direction = 'outbound' AND o.sent_at <= r.sent_at
                  AND o.sent_at >= r.sent_at - ?
            ) AS best
            WHERE best.rank = 1 AND i.id = best.reply_id
            """, (window_s,))
        n = conn.execute("SELECT changes()").fetchone()[0]
    conn.execute("DROP TABLE temp.open_replies")
    conn.execute(
        """
        UPDATE messages SET opted_out = 1 WHERE opted_out = 0 AND id IN (
            SELECT reply_to FROM messages WHERE reply_to IS NOT NULL AND keyword = 'opt_out')
        """)
    conn.execute(
        """
        UPDATE messages SET replied = 1 WHERE replied = 0 AND id IN (
            SELECT reply_to FROM messages WHERE reply_to IS NOT NULL AND keyword IS NULL)
        """)
    conn.execute(
        """
        UPDATE messages AS i SET campaign_id = (SELECT o.campaign_id FROM messages o
                                                WHERE o.id = i.reply_to)
        WHERE i.reply_to IS NOT NULL AND i.campaign_id != (SELECT o.campaign_id FROM messages o
                                                           WHERE o.id = i.reply_to)
        """)
    return n


def reply_target(conn, recipient: bytes, at: int, window_s: int = REPLY_WINDOW_S
                 ) -> tuple[int, int] | None:
    """The message a reply from ``recipient`` at ``at`` answers, by the rule above: the
    latest outbound message to that number within the window before it, as (id,
    campaign_id). One lookup in the recipient index, for live replies one at a time."""
    return conn.execute(
        "SELECT id, campaign_id FROM messages INDEXED BY messages_recipient "
        "WHERE recipient = ? AND direction = 'outbound' AND recipient IS NOT NULL "
        "AND sent_at <= ? AND sent_at >= ? ORDER BY sent_at DESC, id DESC LIMIT 1",
        (recipient, at, at - window_s)).fetchone()
