"""Live data: events from providers (Twilio's callbacks and Event Streams) and from any
other system (``/ingest``), taken in as they happen.

How an event travels:

1. ``events`` turns a request's payload (already authenticated by the web layer in
   ``bot.webhooks``) into inbox events: a key that a repeat shares, a source and a JSON
   body. ``/ingest`` rows are checked here with the importer's own row builders, so a
   bad row is refused with its row, column and reason before anything is written.
2. ``Store.inbox_put`` commits them to the inbox database, a small SQLite file beside
   the main one: the request is answered 2xx only after that commit, and the commit
   never waits for the main database (an import holds its write lock for as long as it
   runs).
3. ``apply`` moves inbox events into the main database, in order and in batches, from one
   thread of ``kpibot serve``: rows are built with the importer's builders, statuses
   only move forward, replies are credited as imports credit them, and the rollups and
   reach tables follow each batch. What was applied is recorded in the same transaction,
   so a crash anywhere applies every event exactly once.
"""
