"""Schema steps, applied in order; ``PRAGMA user_version`` records how many have run."""

MIGRATIONS: tuple[str, ...] = (
    # 1: runs, their checks, events and log lines; the chat audit trail.
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        gateway TEXT NOT NULL,
        status TEXT NOT NULL,
        started_by TEXT NOT NULL,
        origin TEXT NOT NULL,
        config TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT
    );
    CREATE INDEX runs_gateway ON runs (gateway, id);
    CREATE INDEX runs_status ON runs (status);
    CREATE TABLE checks (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        metrics TEXT NOT NULL DEFAULT '[]',
        findings TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        series TEXT NOT NULL DEFAULT '[]',
        UNIQUE (run_id, seq)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_run ON events (run_id, id);
    CREATE TABLE logs (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        level TEXT NOT NULL,
        logger TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX logs_run ON logs (run_id, id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        chat_id INTEGER,
        user_id INTEGER,
        username TEXT NOT NULL,
        action TEXT NOT NULL,
        allowed INTEGER NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 2: who owns a running run (host, pid, process start; a lease renewed while it runs), so that
    # only a run whose owner is gone is marked interrupted; soak samples stored as they are taken.
    """
    ALTER TABLE runs ADD COLUMN owner_host TEXT;
    ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
    ALTER TABLE runs ADD COLUMN owner_start TEXT;
    ALTER TABLE runs ADD COLUMN alive_at TEXT;
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        rtt REAL
    );
    CREATE INDEX samples_run ON samples (run_id, id);
    """,
    # 3 (watch): the watch's outages and the spans it was watching, for /uptime across restarts.
    """
    CREATE TABLE watch_incidents (
        key TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        cause TEXT NOT NULL,
        category TEXT NOT NULL,
        layer TEXT NOT NULL,
        expected_window TEXT,
        test TEXT,
        alerted INTEGER NOT NULL DEFAULT 0,
        acked_by TEXT,
        acked_at TEXT,
        recovery TEXT
    );
    CREATE INDEX watch_incidents_gateway ON watch_incidents (gateway, started_at);
    CREATE TABLE watch_coverage (
        id INTEGER PRIMARY KEY,
        gateway TEXT NOT NULL,
        started_at TEXT NOT NULL,
        seen_at TEXT NOT NULL
    );
    CREATE INDEX watch_coverage_gateway ON watch_coverage (gateway, started_at);
    """,
    # 4 (outbox): messages written before they are sent, sent in id order per chat; chats
    # Telegram refused (blocked, not found) and groups that moved to a supergroup.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        file_name TEXT,
        data BLOB,
        silent INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'pending',
        created_at TEXT NOT NULL,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        split INTEGER NOT NULL DEFAULT 0,
        parts_sent INTEGER NOT NULL DEFAULT 0,
        sent_at TEXT,
        telegram_id INTEGER
    );
    CREATE INDEX outbox_pending ON outbox (status, chat_id, id);
    CREATE TABLE outbox_holds (
        chat_id INTEGER PRIMARY KEY,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        since TEXT NOT NULL
    );
    CREATE TABLE chat_moves (
        old_chat_id INTEGER PRIMARY KEY,
        new_chat_id INTEGER NOT NULL,
        at TEXT NOT NULL
    );
    """,
    # 5: a check's hints, warnings and named facts (e.g. the managed accounts) in their own columns,
    # not prose among its findings to be parsed back; rows stored before are split the same way.
    """
    ALTER TABLE checks ADD COLUMN hints TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE checks ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE checks ADD COLUMN facts TEXT NOT NULL DEFAULT '{}';
    UPDATE checks SET
        hints = (SELECT json_group_array(substr(value, 7)) FROM json_each(checks.findings)
                 WHERE value LIKE 'Hint: %'),
        warnings = (SELECT json_group_array(substr(value, 13)) FROM json_each(checks.findings)
                    WHERE value LIKE '⚠️ Warning: %'),
        facts = COALESCE((SELECT json_object('accounts', substr(value, 19)) FROM json_each(checks.findings)
                          WHERE value LIKE 'Managed accounts: %'), '{}'),
        findings = (SELECT json_group_array(value) FROM json_each(checks.findings)
                    WHERE value NOT LIKE 'Hint: %' AND value NOT LIKE '⚠️ Warning: %');
    """,
    # 6 (wire11): alert messages in the outbox (buttons, edits of an earlier message by key)
    # and the chats that /subscribe to the watch's alerts.
    """
    ALTER TABLE outbox ADD COLUMN buttons TEXT;
    ALTER TABLE outbox ADD COLUMN message_key TEXT;
    ALTER TABLE outbox ADD COLUMN edit INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX outbox_key ON outbox (chat_id, message_key);
    CREATE TABLE watch_subscribers (
        chat_id INTEGER PRIMARY KEY,
        by TEXT NOT NULL,
        since TEXT NOT NULL
    );
    """,
    # 7: what the watch must not forget across a restart (the open outage, a mute, reminder times),
    # and each incident's short reference, which alert buttons carry instead of its long key.
    """
    ALTER TABLE watch_incidents ADD COLUMN ref TEXT;
    CREATE INDEX watch_incidents_ref ON watch_incidents (ref);
    CREATE TABLE watch_memory (
        gateway TEXT PRIMARY KEY,
        saved_at TEXT NOT NULL,
        state TEXT NOT NULL
    );
    """,
)
