//! The default [`Store`]: one SQLite file in WAL mode with `synchronous = FULL`, so a
//! commit survives a crash of the process (and of the machine) and a crash mid-write
//! rolls back to the last commit.

use std::{net::IpAddr, path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, params};

use super::{
    AuditEntry, Challenge, NewNumber, NumberRecord, PeerAddress, RoutableNumber, State, Transition,
    Transport,
    counts::StateCounts,
    method_str, migrations,
    number::route_key,
    parse_method,
    store::{Snapshot, Store, StoreError},
};

pub struct SqliteStore {
    conn: Connection,
    /// The file, for snapshots' own connections; `None` in memory.
    path: Option<std::path::PathBuf>,
}

const COLUMNS: &str = "number, account, peer_host, peer_port, transport, state, opt_in, method, \
                       verified_at, expires_at, last_failure, created_at, updated_at";

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut store = Self::setup(Connection::open(path)?)?;
        store.path = Some(path.to_owned());
        Ok(store)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers never block the writer; FULL: a commit is on disk when it returns.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 64 MiB of page cache (default 2 MiB): a 1M-number registry's indexes fit.
        conn.pragma_update(None, "cache_size", -65536)?;
        migrations::migrate(&mut conn)?;
        Ok(Self { conn, path: None })
    }

    /// `PRAGMA integrity_check`: `ok` or the problems found.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let lines: Vec<String> = stmt
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(lines.join("\n"))
    }

    /// Schema invariants beyond the CHECK constraints: every number has an audit trail
    /// whose last entry names its current state. Returns the numbers that break them.
    pub fn audit_violations(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT n.number FROM numbers n
             LEFT JOIN audit a ON a.id = (SELECT max(id) FROM audit WHERE number = n.number)
             WHERE a.id IS NULL OR a.to_state <> n.state",
        )?;
        let bad = stmt
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(bad)
    }

    /// Bulk-loads records as they are (state included), one audit entry each, in one
    /// transaction: for migrations from other systems, benchmarks and test fixtures.
    pub fn import(&mut self, records: &[NumberRecord], reason: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare(&format!(
                "INSERT INTO numbers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?;
            let mut audit = tx.prepare(
                "INSERT INTO audit (number, at, from_state, to_state, reason) VALUES (?1, ?2, NULL, ?3, ?4)",
            )?;
            for r in records {
                insert.execute(params![
                    r.number,
                    r.account,
                    r.peer.host.to_string(),
                    r.peer.port,
                    r.peer.transport.as_str(),
                    r.state.as_str(),
                    r.opt_in,
                    r.verification_method.map(method_str),
                    r.verified_at,
                    r.expires_at,
                    r.last_failure,
                    r.created_at,
                    r.updated_at,
                ])?;
                audit.execute(params![r.number, r.updated_at, r.state.as_str(), reason])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn corrupt(what: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(StoreError::Corrupt(what.into())))
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<NumberRecord> {
    let host: String = row.get(2)?;
    let transport: String = row.get(4)?;
    let state: String = row.get(5)?;
    let method: Option<String> = row.get(7)?;
    Ok(NumberRecord {
        number: row.get(0)?,
        account: row.get(1)?,
        peer: PeerAddress {
            host: host
                .parse::<IpAddr>()
                .map_err(|_| corrupt(format!("peer_host {host:?}")))?,
            port: row.get(3)?,
            transport: Transport::parse(&transport)
                .ok_or_else(|| corrupt(format!("transport {transport:?}")))?,
        },
        state: State::parse(&state).ok_or_else(|| corrupt(format!("state {state:?}")))?,
        opt_in: row.get(6)?,
        verification_method: method
            .map(|m| parse_method(&m).ok_or_else(|| corrupt(format!("method {m:?}"))))
            .transpose()?,
        verified_at: row.get(8)?,
        expires_at: row.get(9)?,
        last_failure: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

fn get_in(tx: &Connection, number: &str) -> Result<Option<NumberRecord>, StoreError> {
    Ok(tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM numbers WHERE number = ?1"),
            [number],
            record_from_row,
        )
        .optional()?)
}

fn audit_in(
    tx: &Transaction<'_>,
    number: &str,
    now: i64,
    from: Option<State>,
    to: State,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (number, at, from_state, to_state, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![number, now, from.map(State::as_str), to.as_str(), reason],
    )?;
    Ok(())
}

fn require(record: Option<NumberRecord>, number: &str) -> Result<NumberRecord, StoreError> {
    record.ok_or_else(|| StoreError::NotFound(number.to_owned()))
}

fn routable_chunks(
    conn: &Connection,
    now: i64,
    chunk: usize,
    each: &mut dyn FnMut(Vec<RoutableNumber>) -> bool,
) -> Result<(), StoreError> {
    // The SQL form of `NumberRecord::is_routable` (a test keeps the two in step).
    let mut stmt = conn.prepare(
        "SELECT number, peer_host, peer_port FROM numbers
         WHERE state = 'verified' AND opt_in = 1 AND transport = 'udp' AND expires_at > ?1",
    )?;
    let mut rows = stmt.query([now])?;
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(chunk);
    while let Some(row) = rows.next()? {
        if out.len() == chunk && !each(std::mem::replace(&mut out, Vec::with_capacity(chunk))) {
            return Ok(());
        }
        let number: String = row.get(0)?;
        let host: String = row.get(1)?;
        let port: u16 = row.get(2)?;
        let key =
            route_key(&number).ok_or_else(|| StoreError::Corrupt(format!("number {number:?}")))?;
        let host: IpAddr = host
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("peer_host {host:?}")))?;
        out.push(RoutableNumber {
            key,
            peer: std::net::SocketAddr::new(host, port),
        });
    }
    if !out.is_empty() {
        each(out);
    }
    Ok(())
}

/// One scan of the `(state, expires_at)` index, which covers the query.
fn state_counts(conn: &Connection) -> Result<StateCounts, StoreError> {
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM numbers GROUP BY state")?;
    let mut rows = stmt.query([])?;
    let mut counts = StateCounts::default();
    while let Some(row) = rows.next()? {
        let state: String = row.get(0)?;
        let count: i64 = row.get(1)?;
        let state =
            State::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?;
        counts.set(state, count.max(0) as u64);
    }
    Ok(counts)
}

/// Its own read-only connection: in WAL mode, one SELECT reads one consistent version
/// while the writer goes on.
struct SqliteSnapshot {
    conn: Connection,
    now: i64,
}

impl Snapshot for SqliteSnapshot {
    fn routable_chunks(
        &mut self,
        chunk: usize,
        each: &mut dyn FnMut(Vec<RoutableNumber>) -> bool,
    ) -> Result<(), StoreError> {
        routable_chunks(&self.conn, self.now, chunk, each)
    }

    fn state_counts(&mut self) -> Result<StateCounts, StoreError> {
        state_counts(&self.conn)
    }
}

/// What a snapshot of an in-memory database reads, copied when the snapshot is taken.
struct CopiedSnapshot {
    routable: Vec<RoutableNumber>,
    states: StateCounts,
}

impl Snapshot for CopiedSnapshot {
    fn routable_chunks(
        &mut self,
        chunk: usize,
        each: &mut dyn FnMut(Vec<RoutableNumber>) -> bool,
    ) -> Result<(), StoreError> {
        for c in self.routable.chunks(chunk.max(1)) {
            if !each(c.to_vec()) {
                break;
            }
        }
        Ok(())
    }

    fn state_counts(&mut self) -> Result<StateCounts, StoreError> {
        Ok(self.states)
    }
}

impl Store for SqliteStore {
    fn register(&mut self, new: &NewNumber, now: i64) -> Result<NumberRecord, StoreError> {
        let tx = self.conn.transaction()?;
        let existing = get_in(&tx, &new.number)?;
        let from = match &existing {
            Some(r) if r.state.can_become(State::Pending) => Some(r.state),
            Some(r) => {
                return Err(StoreError::AlreadyRegistered {
                    number: new.number.clone(),
                    state: r.state,
                });
            }
            None => None,
        };
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO numbers ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, NULL, NULL, NULL, NULL, ?7, ?7)"
            ),
            params![
                new.number,
                new.account,
                new.peer.host.to_string(),
                new.peer.port,
                new.peer.transport.as_str(),
                new.opt_in,
                now
            ],
        )?;
        tx.execute("DELETE FROM challenges WHERE number = ?1", [&new.number])?;
        let reason = format!("registered by {}", new.account);
        audit_in(&tx, &new.number, now, from, State::Pending, &reason)?;
        let record = require(get_in(&tx, &new.number)?, &new.number)?;
        tx.commit()?;
        Ok(record)
    }

    fn get(&self, number: &str) -> Result<Option<NumberRecord>, StoreError> {
        get_in(&self.conn, number)
    }

    fn list(&self, account: Option<&str>) -> Result<Vec<NumberRecord>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM numbers WHERE ?1 IS NULL OR account = ?1 ORDER BY number"
        ))?;
        let records = stmt
            .query_map([account], record_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(records)
    }

    fn transition(
        &mut self,
        number: &str,
        transition: &Transition,
        now: i64,
    ) -> Result<NumberRecord, StoreError> {
        let tx = self.conn.transaction()?;
        let current = require(get_in(&tx, number)?, number)?;
        let to = transition.target();
        if !current.state.can_become(to) {
            return Err(StoreError::InvalidTransition {
                number: number.to_owned(),
                from: current.state,
                to,
            });
        }
        let reason = match transition {
            Transition::Verify { method, ttl_ms } => {
                tx.execute(
                    "UPDATE numbers SET state = 'verified', method = ?2, verified_at = ?3,
                     expires_at = ?4, last_failure = NULL, updated_at = ?3 WHERE number = ?1",
                    params![
                        number,
                        method_str(*method),
                        now,
                        now.saturating_add(*ttl_ms)
                    ],
                )?;
                tx.execute("DELETE FROM challenges WHERE number = ?1", [number])?;
                format!("verified by {}", method_str(*method))
            }
            Transition::Expire => {
                tx.execute(
                    "UPDATE numbers SET state = 'expired', updated_at = ?2 WHERE number = ?1",
                    params![number, now],
                )?;
                "verification expired".to_owned()
            }
            Transition::Revoke { reason } => {
                tx.execute(
                    "UPDATE numbers SET state = 'revoked', updated_at = ?2 WHERE number = ?1",
                    params![number, now],
                )?;
                tx.execute("DELETE FROM challenges WHERE number = ?1", [number])?;
                format!("revoked: {reason}")
            }
        };
        audit_in(&tx, number, now, Some(current.state), to, &reason)?;
        let record = require(get_in(&tx, number)?, number)?;
        tx.commit()?;
        Ok(record)
    }

    fn record_failure(
        &mut self,
        number: &str,
        reason: &str,
        now: i64,
    ) -> Result<NumberRecord, StoreError> {
        let tx = self.conn.transaction()?;
        let current = require(get_in(&tx, number)?, number)?;
        tx.execute(
            "UPDATE numbers SET last_failure = ?2, updated_at = ?3 WHERE number = ?1",
            params![number, reason, now],
        )?;
        let reason = format!("verification failed: {reason}");
        audit_in(
            &tx,
            number,
            now,
            Some(current.state),
            current.state,
            &reason,
        )?;
        let record = require(get_in(&tx, number)?, number)?;
        tx.commit()?;
        Ok(record)
    }

    fn expire_due(&mut self, now: i64) -> Result<Vec<NumberRecord>, StoreError> {
        let tx = self.conn.transaction()?;
        let due: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT number FROM numbers WHERE state = 'verified' AND expires_at <= ?1",
            )?;
            stmt.query_map([now], |row| row.get(0))?
                .collect::<Result<_, _>>()?
        };
        let mut expired = Vec::with_capacity(due.len());
        for number in &due {
            tx.execute(
                "UPDATE numbers SET state = 'expired', updated_at = ?2 WHERE number = ?1",
                params![number, now],
            )?;
            audit_in(
                &tx,
                number,
                now,
                Some(State::Verified),
                State::Expired,
                "verification expired",
            )?;
            expired.push(require(get_in(&tx, number)?, number)?);
        }
        tx.commit()?;
        Ok(expired)
    }

    fn routable_chunks(
        &self,
        now: i64,
        chunk: usize,
        each: &mut dyn FnMut(Vec<RoutableNumber>) -> bool,
    ) -> Result<(), StoreError> {
        routable_chunks(&self.conn, now, chunk, each)
    }

    fn snapshot(&self, now: i64) -> Result<Box<dyn Snapshot>, StoreError> {
        let Some(path) = &self.path else {
            // A private in-memory database has no second connection: copy it.
            return Ok(Box::new(CopiedSnapshot {
                routable: self.routable(now)?,
                states: state_counts(&self.conn)?,
            }));
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "cache_size", -65536)?;
        // A full read touches every page once: map them rather than copy them in.
        conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
        Ok(Box::new(SqliteSnapshot { conn, now }))
    }

    fn audit(&self, number: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT at, number, from_state, to_state, reason FROM audit WHERE number = ?1 ORDER BY id",
        )?;
        let entries = stmt
            .query_map([number], |row| {
                let from: Option<String> = row.get(2)?;
                let to: String = row.get(3)?;
                Ok(AuditEntry {
                    at: row.get(0)?,
                    number: row.get(1)?,
                    from_state: from
                        .map(|f| State::parse(&f).ok_or_else(|| corrupt(format!("state {f:?}"))))
                        .transpose()?,
                    to_state: State::parse(&to).ok_or_else(|| corrupt(format!("state {to:?}")))?,
                    reason: row.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(entries)
    }

    fn put_challenge(&mut self, c: &Challenge) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO challenges (number, method, code, expires_at, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                c.number,
                method_str(c.method),
                c.code,
                c.expires_at,
                c.attempts
            ],
        )?;
        Ok(())
    }

    fn challenge(&self, number: &str) -> Result<Option<Challenge>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT number, method, code, expires_at, attempts FROM challenges WHERE number = ?1",
                [number],
                |row| {
                    let method: String = row.get(1)?;
                    Ok(Challenge {
                        number: row.get(0)?,
                        method: parse_method(&method)
                            .ok_or_else(|| corrupt(format!("method {method:?}")))?,
                        code: row.get(2)?,
                        expires_at: row.get(3)?,
                        attempts: row.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    fn count_attempt(&mut self, number: &str) -> Result<u32, StoreError> {
        Ok(self.conn.query_row(
            "UPDATE challenges SET attempts = attempts + 1 WHERE number = ?1 RETURNING attempts",
            [number],
            |row| row.get(0),
        )?)
    }

    fn delete_challenge(&mut self, number: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM challenges WHERE number = ?1", [number])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Method;

    fn new_number(n: &str) -> NewNumber {
        NewNumber {
            number: n.into(),
            account: "acme".into(),
            peer: PeerAddress {
                host: "198.51.100.2".parse().unwrap(),
                port: 5060,
                transport: Transport::Udp,
            },
            opt_in: true,
        }
    }

    #[test]
    fn lifecycle_with_audit() {
        let mut s = SqliteStore::in_memory().unwrap();
        let r = s.register(&new_number("15550100001"), 1000).unwrap();
        assert_eq!(r.state, State::Pending);
        assert!(matches!(
            s.register(&new_number("15550100001"), 1001),
            Err(StoreError::AlreadyRegistered { .. })
        ));
        assert!(matches!(
            s.transition("15550100001", &Transition::Expire, 1002),
            Err(StoreError::InvalidTransition { .. })
        ));
        let v = s
            .transition(
                "15550100001",
                &Transition::Verify {
                    method: Method::Message,
                    ttl_ms: 500,
                },
                2000,
            )
            .unwrap();
        assert_eq!(v.expires_at, Some(2500));
        assert!(v.is_routable(2499) && !v.is_routable(2500));
        assert_eq!(s.routable(2499).unwrap().len(), 1);
        assert!(s.routable(2500).unwrap().is_empty());
        assert!(s.expire_due(2499).unwrap().is_empty());
        let expired = s.expire_due(2500).unwrap();
        assert_eq!(expired[0].state, State::Expired);
        s.record_failure("15550100001", "busy", 2600).unwrap();
        s.transition(
            "15550100001",
            &Transition::Revoke {
                reason: "owner".into(),
            },
            3000,
        )
        .unwrap();
        // A revoked number can be registered again, by someone else.
        let mut again = new_number("15550100001");
        again.account = "other".into();
        assert_eq!(s.register(&again, 4000).unwrap().account, "other");
        let trail: Vec<State> = s
            .audit("15550100001")
            .unwrap()
            .iter()
            .map(|a| a.to_state)
            .collect();
        use State::*;
        assert_eq!(
            trail,
            [Pending, Verified, Expired, Expired, Revoked, Pending]
        );
        assert!(s.audit_violations().unwrap().is_empty());
        assert_eq!(s.integrity_check().unwrap(), "ok");
        assert!(matches!(
            s.transition("999", &Transition::Expire, 1),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn routable_sql_agrees_with_is_routable() {
        let mut s = SqliteStore::in_memory().unwrap();
        let mut records = Vec::new();
        let now = 10_000;
        let mut i = 0;
        for state in [
            State::Pending,
            State::Verified,
            State::Expired,
            State::Revoked,
        ] {
            for opt_in in [false, true] {
                for transport in [Transport::Udp, Transport::Tcp] {
                    for expires in [now - 1, now, now + 1] {
                        i += 1;
                        records.push(NumberRecord {
                            number: format!("1555{i:07}"),
                            account: "a".into(),
                            peer: PeerAddress {
                                host: "198.51.100.2".parse().unwrap(),
                                port: 5060,
                                transport,
                            },
                            state,
                            opt_in,
                            verification_method: Some(Method::Call),
                            verified_at: Some(0),
                            expires_at: Some(expires),
                            last_failure: None,
                            created_at: 0,
                            updated_at: 0,
                        });
                    }
                }
            }
        }
        s.import(&records, "fixture").unwrap();
        let want: Vec<_> = records
            .iter()
            .filter(|r| r.is_routable(now))
            .map(|r| route_key(&r.number).unwrap())
            .collect();
        let got: Vec<_> = s.routable(now).unwrap().iter().map(|r| r.key).collect();
        assert_eq!(want.len(), 1);
        assert_eq!(got, want);
    }

    #[test]
    fn state_counts_come_from_a_snapshot_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
        for n in ["15550100001", "15550100002", "15550100003"] {
            store.register(&new_number(n), 1).unwrap();
        }
        let verify = Transition::Verify {
            method: crate::verify::Method::Message,
            ttl_ms: 1000,
        };
        store.transition("15550100002", &verify, 2).unwrap();
        let revoke = Transition::Revoke {
            reason: "test".into(),
        };
        store.transition("15550100003", &revoke, 2).unwrap();
        let counts = store.snapshot(3).unwrap().state_counts().unwrap();
        assert_eq!(
            counts.iter().collect::<Vec<_>>(),
            [
                (State::Pending, 1),
                (State::Verified, 1),
                (State::Expired, 0),
                (State::Revoked, 1)
            ]
        );
        // An in-memory store copies the same into its snapshot.
        let memory = SqliteStore::in_memory().unwrap();
        let counts = memory.snapshot(3).unwrap().state_counts().unwrap();
        assert_eq!(counts, StateCounts::default());
    }

    #[test]
    fn migrations_are_idempotent_and_refuse_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        drop(SqliteStore::open(&path).unwrap());
        let s = SqliteStore::open(&path).unwrap();
        s.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn challenges_count_attempts() {
        let mut s = SqliteStore::in_memory().unwrap();
        s.register(&new_number("15550100001"), 0).unwrap();
        s.put_challenge(&Challenge {
            number: "15550100001".into(),
            method: Method::Message,
            code: Some("123456".into()),
            expires_at: 100,
            attempts: 0,
        })
        .unwrap();
        assert_eq!(s.count_attempt("15550100001").unwrap(), 1);
        assert_eq!(s.count_attempt("15550100001").unwrap(), 2);
        assert_eq!(s.challenge("15550100001").unwrap().unwrap().attempts, 2);
        s.delete_challenge("15550100001").unwrap();
        assert!(s.challenge("15550100001").unwrap().is_none());
    }
}
