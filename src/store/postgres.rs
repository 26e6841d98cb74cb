//! The PostgreSQL store (issue 13, first step): the same batches as the embedded store, one
//! transaction per group commit, committed with PostgreSQL's default `synchronous_commit = on`
//! (the commit returns once its WAL is flushed; with a synchronous standby, once the standby
//! has it too), so a 2xx still waits for a commit a crash cannot lose.
//!
//! Schema (`mcx-authz store migrate` creates it; [`SCHEMA`]): one row per IMPU (`mcx_impu`: the
//! aggregate as `jsonb`, and a `version` raised by every write), the CSK ties, the replay
//! window's token owners, the accepted I_MESSAGEs and `mcx_meta` (format tag, last durable
//! sequence number).
//!
//! **One writer per database in this mode** (`[store] shared = false`, the default): batches
//! are written blind, group-committed. Several instances on one database use `shared = true`
//! ([`super::shared`]): per-IMPU compare-and-set on `version` (drawn from the sequence
//! `mcx_version`, never reused), reload and re-run on a conflict.

use anyhow::{bail, Context};
use mcx_model::{
    Change, Csk, CskId, Impu, ImpuRecord, KeyMessageId, Persist, Seq, Snapshot, TokenId, UnixTime,
};
use postgres::{Client, GenericClient, NoTls};

use super::SealedCsk;

/// The schema, idempotent (`CREATE … IF NOT EXISTS`).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mcx_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE SEQUENCE IF NOT EXISTS mcx_version;
CREATE TABLE IF NOT EXISTS mcx_impu (
    impu text PRIMARY KEY,
    record jsonb NOT NULL,
    version bigint NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS mcx_csk (csk_id text PRIMARY KEY, tie jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS mcx_token_owner (
    token_id text PRIMARY KEY,
    impu text NOT NULL,
    until_s bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS mcx_key_message (message_id text PRIMARY KEY, until_s bigint NOT NULL);
CREATE TABLE IF NOT EXISTS mcx_csk_key (
    csk_id text PRIMARY KEY REFERENCES mcx_csk (csk_id) ON DELETE CASCADE,
    sealed bytea NOT NULL
);
INSERT INTO mcx_meta (key, value) VALUES ('format', 'mcx-authz store v1'), ('seq', '0')
    ON CONFLICT (key) DO NOTHING;
SELECT setval('mcx_version', GREATEST((SELECT last_value FROM mcx_version),
    (SELECT coalesce(max(version), 1) FROM mcx_impu)));
";

/// Creates (or confirms) the schema at `url`.
pub fn migrate(url: &str) -> anyhow::Result<String> {
    let mut client = connect(url)?;
    client
        .batch_execute(SCHEMA)
        .with_context(|| format!("creating the schema at {}", location(url)))?;
    Ok(location(url))
}

/// The server and database `url` names, without credentials.
pub fn location(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!(
                "postgresql://{host}:{port}/{}",
                c.get_dbname().unwrap_or_default()
            )
        }
        Err(_) => "postgresql (unparsable url)".into(),
    }
}

fn connect(url: &str) -> anyhow::Result<Client> {
    Client::connect(url, NoTls).with_context(|| format!("connecting to {}", location(url)))
}

/// The PostgreSQL store, connected.
pub struct PgStore {
    client: Client,
    location: String,
}

impl PgStore {
    /// Connects, checks the schema and reads everything.
    pub fn open(url: &str) -> anyhow::Result<(PgStore, Snapshot)> {
        let location = location(url);
        let mut store = PgStore {
            client: connect(url)?,
            location: location.clone(),
        };
        let (snapshot, _) = read_all(&mut store.client).with_context(|| {
            format!("reading the store at {location} (run `mcx-authz store migrate --url …` once to create it)")
        })?;
        Ok((store, snapshot))
    }

    /// The server and database, without credentials.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The sealed keys of the uploaded CSKs.
    pub fn sealed_csks(&mut self) -> anyhow::Result<Vec<SealedCsk>> {
        let rows = self
            .client
            .query(
                "SELECT csk_id, sealed FROM mcx_csk_key ORDER BY csk_id",
                &[],
            )
            .with_context(|| format!("reading the sealed CSKs at {} (run `mcx-authz store migrate --url …` once after an upgrade)", self.location))?;
        Ok(rows
            .iter()
            .map(|r| SealedCsk {
                csk_id: CskId::new(r.get::<_, String>(0)),
                sealed: r.get(1),
            })
            .collect())
    }
}

/// Reads the whole store (and each IMPU row's version) through `client`: a connection, or a
/// transaction (the shared store reads in one repeatable-read transaction).
pub(super) fn read_all(
    client: &mut impl GenericClient,
) -> anyhow::Result<(Snapshot, Vec<(Impu, i64)>)> {
    let format: Option<String> = client
        .query_opt("SELECT value FROM mcx_meta WHERE key = 'format'", &[])?
        .map(|r| r.get(0));
    if format.as_deref() != Some(super::redb::FORMAT) {
        bail!("format tag {format:?}, expected {:?}", super::redb::FORMAT);
    }
    let seq: String = client
        .query_one("SELECT value FROM mcx_meta WHERE key = 'seq'", &[])?
        .get(0);
    let mut snapshot = Snapshot {
        seq: Seq(seq.parse().context("mcx_meta seq")?),
        ..Snapshot::default()
    };
    let mut versions = Vec::new();
    for row in client.query(
        "SELECT impu, record, version FROM mcx_impu ORDER BY impu",
        &[],
    )? {
        let impu: String = row.get(0);
        let record: ImpuRecord =
            serde_json::from_value(row.get(1)).with_context(|| format!("impu record {impu:?}"))?;
        versions.push((Impu::new(impu.clone()), row.get::<_, i64>(2)));
        snapshot.impus.push((Impu::new(impu), record));
    }
    for row in client.query("SELECT csk_id, tie FROM mcx_csk ORDER BY csk_id", &[])? {
        let id: String = row.get(0);
        let csk: Csk = serde_json::from_value(row.get(1)).with_context(|| format!("csk {id:?}"))?;
        snapshot.csks.push((CskId::new(id), csk));
    }
    for row in client.query(
        "SELECT token_id, impu, until_s FROM mcx_token_owner ORDER BY token_id",
        &[],
    )? {
        let (t, i, u): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        snapshot
            .token_owners
            .push((TokenId::new(t), Impu::new(i), UnixTime(u.max(0) as u64)));
    }
    for row in client.query(
        "SELECT message_id, until_s FROM mcx_key_message ORDER BY message_id",
        &[],
    )? {
        let (m, u): (String, i64) = (row.get(0), row.get(1));
        snapshot
            .key_messages
            .push((KeyMessageId::new(m), UnixTime(u.max(0) as u64)));
    }
    Ok((snapshot, versions))
}

/// A time as PostgreSQL's `bigint` seconds (saturating).
pub(super) fn secs(t: UnixTime) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

/// Forgets every token owner and key-transport message ID (`Change::ClearReplay`).
pub(super) fn clear_replay(tx: &mut impl GenericClient) -> Result<(), postgres::Error> {
    tx.batch_execute("DELETE FROM mcx_token_owner; DELETE FROM mcx_key_message;")
}

/// Collects the token owners and key-transport message IDs lapsed at `now`. Store TTLs only
/// collect garbage: the machine ignores lapsed entries anyway. One writer's batch or one shared
/// instance's transaction calls it now and then.
pub(super) fn collect_lapsed(
    tx: &mut impl GenericClient,
    now: UnixTime,
) -> Result<(), postgres::Error> {
    let now = secs(now);
    tx.execute("DELETE FROM mcx_token_owner WHERE until_s <= $1", &[&now])?;
    tx.execute("DELETE FROM mcx_key_message WHERE until_s <= $1", &[&now])?;
    Ok(())
}

impl super::Writer for PgStore {
    fn commit(
        &mut self,
        batches: &[Persist],
        sealed: &[SealedCsk],
        gc: Option<UnixTime>,
    ) -> anyhow::Result<()> {
        let mut tx = self.client.transaction()?;
        for b in batches {
            for c in &b.changes {
                match c {
                    Change::Impu { impu, record } => match record {
                        Some(r) => {
                            tx.execute(
                                "INSERT INTO mcx_impu (impu, record, version) VALUES ($1, $2, nextval('mcx_version')) \
                                 ON CONFLICT (impu) DO UPDATE \
                                 SET record = EXCLUDED.record, version = nextval('mcx_version')",
                                &[&impu.as_str(), &serde_json::to_value(r)?],
                            )?;
                        }
                        None => {
                            tx.execute("DELETE FROM mcx_impu WHERE impu = $1", &[&impu.as_str()])?;
                        }
                    },
                    Change::Csk { csk_id, csk } => match csk {
                        Some(c) => {
                            tx.execute(
                                "INSERT INTO mcx_csk (csk_id, tie) VALUES ($1, $2) \
                                 ON CONFLICT (csk_id) DO UPDATE SET tie = EXCLUDED.tie",
                                &[&csk_id.as_str(), &serde_json::to_value(c)?],
                            )?;
                        }
                        None => {
                            tx.execute(
                                "DELETE FROM mcx_csk WHERE csk_id = $1",
                                &[&csk_id.as_str()],
                            )?;
                        }
                    },
                    Change::TokenOwner {
                        token_id,
                        impu,
                        until,
                    } => {
                        tx.execute(
                            "INSERT INTO mcx_token_owner (token_id, impu, until_s) VALUES ($1, $2, $3) \
                             ON CONFLICT (token_id) DO UPDATE SET impu = EXCLUDED.impu, until_s = EXCLUDED.until_s",
                            &[&token_id.as_str(), &impu.as_str(), &secs(*until)],
                        )?;
                    }
                    Change::KeyMessage { message_id, until } => {
                        tx.execute(
                            "INSERT INTO mcx_key_message (message_id, until_s) VALUES ($1, $2) \
                             ON CONFLICT (message_id) DO UPDATE SET until_s = EXCLUDED.until_s",
                            &[&message_id.as_str(), &secs(*until)],
                        )?;
                    }
                    Change::ClearReplay => clear_replay(&mut tx)?,
                }
            }
        }
        for k in sealed {
            tx.execute(
                "INSERT INTO mcx_csk_key (csk_id, sealed) VALUES ($1, $2) \
                 ON CONFLICT (csk_id) DO UPDATE SET sealed = EXCLUDED.sealed",
                &[&k.csk_id.as_str(), &k.sealed],
            )?;
        }
        if let Some(now) = gc {
            collect_lapsed(&mut tx, now)?;
        }
        let seq = batches.last().map_or(0, |b| b.seq.0);
        tx.execute(
            "UPDATE mcx_meta SET value = $1 WHERE key = 'seq'",
            &[&seq.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }
}
