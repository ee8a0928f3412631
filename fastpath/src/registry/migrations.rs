//! Versioned schema migrations keyed on SQLite's `user_version`: migration `i` brings
//! the schema from version `i` to `i + 1`, in one transaction with the version bump, so
//! a crash mid-migration leaves the old schema. (`rusqlite_migration` does the same, but
//! no release of it resolves against the rusqlite we can build here.)

use rusqlite::Connection;

use super::store::StoreError;

/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: numbers, their audit log and pending challenges.
    "CREATE TABLE numbers (
        number       TEXT PRIMARY KEY NOT NULL,
        account      TEXT NOT NULL,
        peer_host    TEXT NOT NULL,
        peer_port    INTEGER NOT NULL CHECK (peer_port BETWEEN 1 AND 65535),
        transport    TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
        state        TEXT NOT NULL CHECK (state IN ('pending', 'verified', 'expired', 'revoked')),
        opt_in       INTEGER NOT NULL CHECK (opt_in IN (0, 1)),
        method       TEXT CHECK (method IN ('call', 'message', 'missed_call')),
        verified_at  INTEGER,
        expires_at   INTEGER,
        last_failure TEXT,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        CHECK (state <> 'verified' OR (verified_at IS NOT NULL AND expires_at IS NOT NULL))
     );
     CREATE INDEX numbers_by_account ON numbers (account, number);
     CREATE INDEX numbers_by_expiry ON numbers (state, expires_at);
     CREATE TABLE audit (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        number     TEXT NOT NULL REFERENCES numbers (number),
        at         INTEGER NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        reason     TEXT NOT NULL
     );
     CREATE INDEX audit_by_number ON audit (number, id);
     CREATE TABLE challenges (
        number     TEXT PRIMARY KEY NOT NULL REFERENCES numbers (number),
        method     TEXT NOT NULL CHECK (method IN ('call', 'message', 'missed_call')),
        code       TEXT,
        expires_at INTEGER NOT NULL,
        attempts   INTEGER NOT NULL
     );",
];

/// The schema version this build writes.
pub const LATEST: usize = MIGRATIONS.len();

pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let current = usize::try_from(current)
        .map_err(|_| StoreError::Schema(format!("negative schema version {current}")))?;
    if current > LATEST {
        return Err(StoreError::Schema(format!(
            "database schema version {current} is newer than this fastpath ({LATEST}); upgrade fastpath"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
    }
    Ok(LATEST)
}
