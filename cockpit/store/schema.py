"""The journal's tables (SQLite), and how a journal of an older version is brought up to date."""

from __future__ import annotations

# Bump when the schema changes, and teach _migrate the step from the version before.
SCHEMA_VERSION = 2

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY,
        tag TEXT NOT NULL UNIQUE,
        branch TEXT NOT NULL,
        base_commit TEXT NOT NULL,
        created_at REAL NOT NULL,
        mode TEXT NOT NULL,
        proposer TEXT NOT NULL,
        config_json TEXT NOT NULL DEFAULT '{}',
        corpus_fingerprint TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'active',
        baseline_val_bpb REAL,
        best_val_bpb REAL,
        best_commit TEXT,
        target INTEGER
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS experiments (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        parent_commit TEXT,
        commit_sha TEXT,
        ref TEXT,
        proposer TEXT,
        model TEXT,
        description TEXT NOT NULL DEFAULT '',
        hypothesis TEXT NOT NULL DEFAULT '',
        diff TEXT NOT NULL DEFAULT '',
        script_hash TEXT,
        status TEXT NOT NULL DEFAULT 'proposed',
        outcome TEXT,
        exit_code INTEGER,
        val_bpb REAL,
        peak_memory_mb REAL,
        training_seconds REAL,
        total_seconds REAL,
        num_steps INTEGER,
        attempt INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        decision TEXT,
        decision_reason TEXT,
        summary_json TEXT,
        log_path TEXT,
        crash_tail TEXT,
        lines_of_code INTEGER,
        details_json TEXT,
        UNIQUE (run_id, number)
    )
    """,
    "CREATE INDEX IF NOT EXISTS experiments_script ON experiments(run_id, script_hash)",
    """
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY,
        run_id INTEGER REFERENCES runs(id) ON DELETE CASCADE,
        experiment_id INTEGER REFERENCES experiments(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        data_json TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id)",
    "CREATE INDEX IF NOT EXISTS events_experiment ON events(experiment_id)",
    """
    CREATE TABLE IF NOT EXISTS metrics (
        id INTEGER PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        t REAL,
        step INTEGER,
        progress REAL,
        loss REAL,
        data_json TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS metrics_experiment ON metrics(experiment_id)",
    """
    CREATE TABLE IF NOT EXISTS samples (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        experiment_id INTEGER REFERENCES experiments(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        data_json TEXT NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX IF NOT EXISTS samples_run_at ON samples(run_id, at)",
    """
    CREATE TABLE IF NOT EXISTS commands (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        kind TEXT NOT NULL,
        payload_json TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'pending',
        handled_at REAL,
        result TEXT NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX IF NOT EXISTS commands_status ON commands(status, id)",
    """
    CREATE TABLE IF NOT EXISTS state (
        key TEXT PRIMARY KEY,
        value_json TEXT,
        updated_at REAL NOT NULL
    )
    """,
)
# What each schema version adds to the one before; a journal of an older version is brought up
# to date when it is opened for writing.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: free-form facts of an experiment (the crash it fixes, integrity flags, evidence).
    2: ("ALTER TABLE experiments ADD COLUMN details_json TEXT",),
}
