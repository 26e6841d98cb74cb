//! Several `mcx-authz serve` instances on one PostgreSQL database (issue 13, `[store] backend =
//! "postgres"` with `shared = true`). Kamailio's `db_mode = 3` reads the location table on every
//! request; we do the same for the keys a request names, and write with a compare-and-set:
//!
//! 1. **Read first.** Before the machine decides an input, the instance reads the rows of every
//!    key the input names: its IMPU's aggregate (with the row's `version`), the presented
//!    token's replay-window owner, the uploaded I_MESSAGE, the CSK that opened the token or that
//!    the upload carries. An IMPU whose version differs from the one this instance last saw, and
//!    every cross-IMPU row read, go to the machine as [`Input::Reload`] before the input. So a
//!    decision that writes nothing (a 403 because "not registered") is taken on the state the
//!    store held at the read: linearized at the read.
//! 2. **Compare-and-set.** The batch the input persists is written in one transaction, each
//!    change conditioned on what the instance believed: an IMPU row by `version` (`UPDATE … WHERE
//!    impu = $1 AND version = $2`, `INSERT … ON CONFLICT DO NOTHING` for an IMPU believed absent,
//!    `DELETE … WHERE version = $2`); a token owner only when free, lapsed or already this IMPU's;
//!    an I_MESSAGE only when nobody has it (or the read saw it: a re-spend); a CSK tie that was
//!    read only against the value read. Versions come from one sequence (`mcx_version`), never
//!    reused, so a row deleted and created again never matches an old version (no ABA).
//! 3. **Conflict is an input.** If any condition fails, the transaction is rolled back, every key
//!    read or written is read again and given to the machine as [`Input::Reload`] (undoing this
//!    instance's speculative change), and the input runs again. After [`MAX_ATTEMPTS`] the
//!    request is dropped unanswered (counted; a SIP client retransmits), with the machine's state
//!    for those keys reloaded from the store.
//! 4. **Expiry sweeps** are the same: [`Input::Tick`] decides from the time passed in, and its
//!    deletes are compare-and-sets on the version this instance holds. If another instance
//!    refreshed the IMPU meanwhile, the delete finds another version, the IMPU is reloaded (with
//!    its new deadlines) and the tick runs again: no instance deletes what another just
//!    refreshed.
//!
//! The database calls run on a scoped thread: the blocking `postgres` client must not run on an
//! async runtime's thread, and the server calls the machine from its runtime's workers under
//! its one lock. That lock is held across the read and the commit, so one instance decides one
//! input at a time (its other requests wait): the price of deciding on fresh state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use mcx_model::{
    AssertedIdentity, Authorization, Change, Csk, CskId, Impu, ImpuRecord, Input, KeyMessageId,
    KeyUpload, Machine, Output, Persist, Protection, PublishBody, Reload, TokenId, TokenVerdict,
    UnixTime,
};
use postgres::{Client, NoTls, Statement};

use super::postgres as postgres_store;
use postgres_store::secs;

/// How many times one input runs against conflicts before it is dropped.
pub const MAX_ATTEMPTS: u32 = 16;

/// Counters for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct SharedStats {
    /// Inputs that ran (each attempt counts).
    pub attempts: AtomicU64,
    /// Transactions committed (each one durable commit).
    pub commits: AtomicU64,
    /// Compare-and-set conflicts (each rolled back and re-run).
    pub conflicts: AtomicU64,
    /// IMPU aggregates replaced by a fresher store row.
    pub reloaded_impus: AtomicU64,
    /// Inputs dropped after [`MAX_ATTEMPTS`].
    pub gave_up: AtomicU64,
    /// Time in commits, microseconds.
    pub commit_micros: AtomicU64,
}

/// An instance's connection to the shared store and what it last saw of each IMPU row.
pub struct SharedPg {
    /// `None` only while dropping.
    client: Option<Client>,
    location: String,
    /// The `version` of each IMPU row as this instance last read or wrote it; absent: the
    /// instance believes the IMPU has no row. Mirrors the machine's IMPUs (an entry goes when the
    /// row goes), so it is bounded as the machine's tables are.
    versions: HashMap<Impu, i64>,
    statements: Statements,
    /// When lapsed replay-window rows were last collected.
    last_gc: Instant,
    /// Counters.
    pub stats: SharedStats,
}

impl Drop for SharedPg {
    /// The blocking client's drop closes the connection on its own runtime, which must not run
    /// on an async runtime's thread (where the server drops its state): it is dropped on a
    /// thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

impl std::fmt::Debug for SharedPg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPg")
            .field("location", &self.location)
            .field("impus", &self.versions.len())
            .finish()
    }
}

/// The statements one input runs, prepared once per connection (each `&str` query would be
/// parsed again: one more round trip).
struct Statements {
    read: Statement,
    impu_update: Statement,
    impu_insert: Statement,
    impu_delete: Statement,
    impu_exists: Statement,
    csk_insert_new: Statement,
    csk_update_if: Statement,
    csk_delete_if: Statement,
    csk_upsert: Statement,
    csk_delete: Statement,
    token_owner: Statement,
    key_message_again: Statement,
    key_message_new: Statement,
}

impl Statements {
    fn prepare(c: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            read: c.prepare(
                "SELECT 'i', impu, record, version FROM mcx_impu WHERE impu = ANY($1) \
                 UNION ALL SELECT 'c', csk_id, tie, NULL FROM mcx_csk WHERE csk_id = ANY($2) \
                 UNION ALL SELECT 't', token_id, to_jsonb(impu), until_s FROM mcx_token_owner \
                     WHERE token_id = ANY($3) \
                 UNION ALL SELECT 'm', message_id, NULL, until_s FROM mcx_key_message \
                     WHERE message_id = ANY($4)",
            )?,
            impu_update: c.prepare(
                "UPDATE mcx_impu SET record = $2, version = nextval('mcx_version') \
                 WHERE impu = $1 AND version = $3 RETURNING version",
            )?,
            impu_insert: c.prepare(
                "INSERT INTO mcx_impu (impu, record, version) \
                 VALUES ($1, $2, nextval('mcx_version')) \
                 ON CONFLICT (impu) DO NOTHING RETURNING version",
            )?,
            impu_delete: c.prepare("DELETE FROM mcx_impu WHERE impu = $1 AND version = $2")?,
            impu_exists: c.prepare("SELECT 1 FROM mcx_impu WHERE impu = $1")?,
            csk_insert_new: c.prepare(
                "INSERT INTO mcx_csk (csk_id, tie) VALUES ($1, $2) ON CONFLICT (csk_id) DO NOTHING",
            )?,
            csk_update_if: c
                .prepare("UPDATE mcx_csk SET tie = $2 WHERE csk_id = $1 AND tie = $3")?,
            csk_delete_if: c.prepare("DELETE FROM mcx_csk WHERE csk_id = $1 AND tie = $2")?,
            csk_upsert: c.prepare(
                "INSERT INTO mcx_csk (csk_id, tie) VALUES ($1, $2) \
                 ON CONFLICT (csk_id) DO UPDATE SET tie = EXCLUDED.tie",
            )?,
            csk_delete: c.prepare("DELETE FROM mcx_csk WHERE csk_id = $1")?,
            token_owner: c.prepare(
                "INSERT INTO mcx_token_owner (token_id, impu, until_s) VALUES ($1, $2, $3) \
                 ON CONFLICT (token_id) DO UPDATE \
                 SET impu = EXCLUDED.impu, until_s = EXCLUDED.until_s \
                 WHERE mcx_token_owner.impu = EXCLUDED.impu OR mcx_token_owner.until_s <= $4",
            )?,
            key_message_again: c.prepare(
                "INSERT INTO mcx_key_message (message_id, until_s) VALUES ($1, $2) \
                 ON CONFLICT (message_id) DO UPDATE \
                 SET until_s = GREATEST(mcx_key_message.until_s, EXCLUDED.until_s)",
            )?,
            key_message_new: c.prepare(
                "INSERT INTO mcx_key_message (message_id, until_s) VALUES ($1, $2) \
                 ON CONFLICT (message_id) DO UPDATE SET until_s = EXCLUDED.until_s \
                 WHERE mcx_key_message.until_s <= $3",
            )?,
        })
    }
}

/// The input was dropped: the store kept changing under it (see [`MAX_ATTEMPTS`]).
#[derive(Debug)]
pub struct Contention;

/// The keys one input reads and writes.
#[derive(Debug, Default, Clone)]
struct Keys {
    impus: BTreeSet<Impu>,
    csks: BTreeSet<CskId>,
    tokens: BTreeSet<TokenId>,
    messages: BTreeSet<KeyMessageId>,
}

impl Keys {
    fn of(input: &Input) -> Keys {
        let mut k = Keys::default();
        match input {
            Input::Publish(p) => {
                if let AssertedIdentity::Trusted(i) = &p.impu {
                    k.impus.insert(i.clone());
                }
                if let Some(KeyUpload::Verified {
                    csk_id, message_id, ..
                }) = p.key_upload.as_deref()
                {
                    k.csks.insert(csk_id.clone());
                    k.messages.insert(message_id.clone());
                }
                if let PublishBody::Authorization(a) = &p.body {
                    k.authorization(a);
                }
            }
            Input::ThirdPartyRegister(r) => {
                if let AssertedIdentity::Trusted(i) = &r.impu {
                    k.impus.insert(i.clone());
                }
                for (_, a) in &r.embedded {
                    k.authorization(a);
                }
            }
            Input::Tick
            | Input::Restart
            | Input::Load(_)
            | Input::Reload(_)
            | Input::ProvisionCsk { .. } => {}
        }
        k
    }

    fn authorization(&mut self, a: &Authorization) {
        if let TokenVerdict::Verified(c) = &a.token {
            self.tokens.insert(c.token_id.clone());
        }
        if let Protection::Csk(id) = &a.protection {
            self.csks.insert(id.clone());
        }
    }

    /// Adds every key a batch writes.
    fn add_written(&mut self, batches: &[&Persist]) {
        for c in batches.iter().flat_map(|b| &b.changes) {
            match c {
                Change::Impu { impu, .. } => {
                    self.impus.insert(impu.clone());
                }
                Change::Csk { csk_id, .. } => {
                    self.csks.insert(csk_id.clone());
                }
                Change::TokenOwner { token_id, .. } => {
                    self.tokens.insert(token_id.clone());
                }
                Change::KeyMessage { message_id, .. } => {
                    self.messages.insert(message_id.clone());
                }
                Change::ClearReplay => {}
            }
        }
    }
}

/// What one read found.
#[derive(Debug, Default)]
struct Read {
    impus: BTreeMap<Impu, Option<(ImpuRecord, i64)>>,
    csks: BTreeMap<CskId, Option<serde_json::Value>>,
    tokens: BTreeMap<TokenId, Option<(Impu, UnixTime)>>,
    messages: BTreeMap<KeyMessageId, Option<UnixTime>>,
}

enum Failed {
    Conflict,
    Db(anyhow::Error),
}

impl From<postgres::Error> for Failed {
    fn from(e: postgres::Error) -> Self {
        Failed::Db(e.into())
    }
}

impl From<serde_json::Error> for Failed {
    fn from(e: serde_json::Error) -> Self {
        Failed::Db(e.into())
    }
}

/// The client (`None` only while the store is dropped).
fn connected(client: &mut Option<Client>) -> &mut Client {
    client.as_mut().expect("the client is taken only by drop")
}

fn time(s: i64) -> UnixTime {
    UnixTime(s.max(0) as u64)
}

impl SharedPg {
    /// Connects, checks the schema and reads everything, with each IMPU row's version, in one
    /// repeatable-read transaction (records and versions from the same instant).
    pub fn open(
        url: &str,
    ) -> anyhow::Result<(SharedPg, mcx_model::Snapshot, Vec<super::SealedCsk>)> {
        let location = super::postgres::location(url);
        let mut client =
            Client::connect(url, NoTls).with_context(|| format!("connecting to {location}"))?;
        let (snapshot, versions, sealed) = {
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let read = super::postgres::read_all(&mut tx).with_context(|| {
                format!("reading the store at {location} (run `mcx-authz store migrate --url …` once to create it)")
            })?;
            let sealed = tx
                .query(
                    "SELECT csk_id, sealed FROM mcx_csk_key ORDER BY csk_id",
                    &[],
                )
                .with_context(|| format!("reading the sealed CSKs at {location}"))?
                .iter()
                .map(|r| super::SealedCsk {
                    csk_id: CskId::new(r.get::<_, String>(0)),
                    sealed: r.get(1),
                })
                .collect::<Vec<_>>();
            tx.commit()?;
            (read.0, read.1, sealed)
        };
        Ok((
            SharedPg {
                statements: Statements::prepare(&mut client)
                    .with_context(|| format!("preparing statements at {location}"))?,
                client: Some(client),
                location,
                versions: versions.into_iter().collect(),
                last_gc: Instant::now(),
                stats: SharedStats::default(),
            },
            snapshot,
            sealed,
        ))
    }

    /// The server and database, without credentials.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Runs `input` on `machine` against the shared store (module docs): read, reload what is
    /// stale, decide, compare-and-set, and on a conflict reload and run again. Returns the
    /// outputs of the attempt that committed. A database error other than a conflict is
    /// fail-stop, as the group-commit writer's: the process exits (code 70).
    pub fn step(
        &mut self,
        machine: &mut Machine,
        now: UnixTime,
        input: Input,
    ) -> Result<Vec<Output>, Contention> {
        // Load replaces everything with what `open` read (versions included); nothing to read.
        let mut keys = Keys::of(&input);
        for attempt in 0..MAX_ATTEMPTS {
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            let read = self.read(&keys).unwrap_or_else(|e| self.fail_stop(e));
            let reload = self.reload_from(&read, attempt > 0);
            if !reload.is_empty() {
                machine.handle(now, Input::Reload(Box::new(reload)));
            }
            let outputs = machine.handle(now, input.clone());
            let batches: Vec<&Persist> = outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Persist(p) => Some(p),
                    _ => None,
                })
                .collect();
            if batches.is_empty() {
                return Ok(outputs);
            }
            let started = Instant::now();
            match self.commit(&batches, &read, now) {
                Ok(()) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .commit_micros
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    return Ok(outputs);
                }
                Err(Failed::Conflict) => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(attempt, "shared store: compare-and-set conflict; reloading");
                    keys.add_written(&batches);
                }
                Err(Failed::Db(e)) => self.fail_stop(e),
            }
        }
        // Give up: what the machine holds for these keys becomes the store's again.
        self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
        let read = self.read(&keys).unwrap_or_else(|e| self.fail_stop(e));
        let reload = self.reload_from(&read, true);
        machine.handle(now, Input::Reload(Box::new(reload)));
        tracing::warn!(
            "shared store: input dropped after {MAX_ATTEMPTS} conflicting attempts (contention)"
        );
        Err(Contention)
    }

    fn fail_stop(&self, e: anyhow::Error) -> ! {
        tracing::error!(error = %format!("{e:#}"), store = %self.location, "shared store failed: stopping (fail-stop); restart to reload the durable state");
        eprintln!(
            "mcx-authz: shared store {} failed: {e:#}; stopping (fail-stop)",
            self.location
        );
        std::process::exit(70);
    }

    /// Stores uploaded CSKs' sealed keys, after the transaction that committed their ties (a
    /// key whose tie is gone again is skipped).
    pub fn store_sealed(&mut self, sealed: &[super::SealedCsk]) -> anyhow::Result<()> {
        let client = connected(&mut self.client);
        for s in sealed {
            client.execute(
                "INSERT INTO mcx_csk_key (csk_id, sealed) \
                 SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM mcx_csk WHERE csk_id = $1) \
                 ON CONFLICT (csk_id) DO UPDATE SET sealed = EXCLUDED.sealed",
                &[&s.csk_id.as_str(), &s.sealed],
            )?;
        }
        Ok(())
    }

    /// Reads the rows of `keys` with one prepared statement (one round trip; one statement sees
    /// one snapshot of every table).
    fn read(&mut self, keys: &Keys) -> anyhow::Result<Read> {
        let mut read = Read {
            impus: keys.impus.iter().map(|i| (i.clone(), None)).collect(),
            csks: keys.csks.iter().map(|i| (i.clone(), None)).collect(),
            tokens: keys.tokens.iter().map(|i| (i.clone(), None)).collect(),
            messages: keys.messages.iter().map(|i| (i.clone(), None)).collect(),
        };
        if keys.impus.is_empty()
            && keys.csks.is_empty()
            && keys.tokens.is_empty()
            && keys.messages.is_empty()
        {
            return Ok(read);
        }
        let names =
            |set: &mut dyn Iterator<Item = &str>| set.map(str::to_owned).collect::<Vec<_>>();
        let impus = names(&mut keys.impus.iter().map(|k| k.as_str()));
        let csks = names(&mut keys.csks.iter().map(|k| k.as_str()));
        let tokens = names(&mut keys.tokens.iter().map(|k| k.as_str()));
        let messages = names(&mut keys.messages.iter().map(|k| k.as_str()));
        let rows = connected(&mut self.client)
            .query(&self.statements.read, &[&impus, &csks, &tokens, &messages])?;
        for row in rows {
            let (kind, key): (&str, String) = (row.get(0), row.get(1));
            let doc: Option<serde_json::Value> = row.get(2);
            let number: Option<i64> = row.get(3);
            match (kind, doc, number) {
                ("i", Some(doc), Some(version)) => {
                    let record: ImpuRecord = serde_json::from_value(doc)
                        .with_context(|| format!("impu record {key:?}"))?;
                    read.impus.insert(Impu::new(key), Some((record, version)));
                }
                ("c", Some(doc), _) => {
                    read.csks.insert(CskId::new(key), Some(doc));
                }
                ("t", Some(serde_json::Value::String(impu)), Some(until)) => {
                    read.tokens
                        .insert(TokenId::new(key), Some((Impu::new(impu), time(until))));
                }
                ("m", _, Some(until)) => {
                    read.messages
                        .insert(KeyMessageId::new(key), Some(time(until)));
                }
                other => anyhow::bail!("unexpected row {other:?} reading {key:?}"),
            }
        }
        Ok(read)
    }

    /// The [`Reload`] that makes the machine hold what `read` found: every IMPU whose version is
    /// not the one this instance holds (every IMPU read, after a conflict: the rolled-back
    /// attempt changed the machine), and every cross-IMPU row read. Updates the versions held.
    fn reload_from(&mut self, read: &Read, all: bool) -> Reload {
        let mut reload = Reload::default();
        for (impu, row) in &read.impus {
            let seen = row.as_ref().map(|(_, v)| *v);
            if all || self.versions.get(impu).copied() != seen {
                self.stats.reloaded_impus.fetch_add(1, Ordering::Relaxed);
                reload
                    .impus
                    .push((impu.clone(), row.as_ref().map(|(r, _)| r.clone())));
            }
            match seen {
                Some(v) => self.versions.insert(impu.clone(), v),
                None => self.versions.remove(impu),
            };
        }
        for (id, tie) in &read.csks {
            let csk: Option<Csk> = tie
                .as_ref()
                .and_then(|t| serde_json::from_value(t.clone()).ok());
            reload.csks.push((id.clone(), csk));
        }
        reload.token_owners = read
            .tokens
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        reload.key_messages = read.messages.iter().map(|(k, v)| (k.clone(), *v)).collect();
        reload
    }

    /// Writes `batches` in one transaction, each change a compare-and-set (module docs); on
    /// success, the versions held become the written rows'.
    fn commit(&mut self, batches: &[&Persist], read: &Read, now: UnixTime) -> Result<(), Failed> {
        let st = &self.statements;
        let mut tx = connected(&mut self.client).transaction()?;
        let mut written: Vec<(Impu, Option<i64>)> = Vec::new();
        for c in batches.iter().flat_map(|b| &b.changes) {
            match c {
                Change::Impu { impu, record } => {
                    let held = self.versions.get(impu).copied();
                    let name = impu.as_str();
                    let version: Option<i64> = match (record, held) {
                        (Some(r), Some(v)) => {
                            let row = tx.query_opt(
                                &st.impu_update,
                                &[&name, &serde_json::to_value(r)?, &v],
                            )?;
                            Some(row.ok_or(Failed::Conflict)?.get(0))
                        }
                        (Some(r), None) => {
                            let row =
                                tx.query_opt(&st.impu_insert, &[&name, &serde_json::to_value(r)?])?;
                            Some(row.ok_or(Failed::Conflict)?.get(0))
                        }
                        (None, Some(v)) => {
                            let n = tx.execute(&st.impu_delete, &[&name, &v])?;
                            if n != 1 {
                                return Err(Failed::Conflict);
                            }
                            None
                        }
                        (None, None) => {
                            // Believed absent and still absent: nothing to write.
                            if tx.query_opt(&st.impu_exists, &[&name])?.is_some() {
                                return Err(Failed::Conflict);
                            }
                            None
                        }
                    };
                    written.push((impu.clone(), version));
                }
                Change::Csk { csk_id, csk } => {
                    let id = csk_id.as_str();
                    let new = csk.as_ref().map(serde_json::to_value).transpose()?;
                    let n = match (read.csks.get(csk_id), new) {
                        // Read before deciding: compare with what was read.
                        (Some(None), Some(new)) => tx.execute(&st.csk_insert_new, &[&id, &new])?,
                        (Some(Some(old)), Some(new)) => {
                            tx.execute(&st.csk_update_if, &[&id, &new, old])?
                        }
                        (Some(Some(old)), None) => tx.execute(&st.csk_delete_if, &[&id, old])?,
                        (Some(None), None) => 1,
                        // Not read (a tick's or a release's drop, a provisioned key): rides the
                        // compare-and-set of the IMPU it is tied to, in this transaction.
                        (None, Some(new)) => tx.execute(&st.csk_upsert, &[&id, &new])?,
                        (None, None) => {
                            tx.execute(&st.csk_delete, &[&id])?;
                            1
                        }
                    };
                    if n != 1 {
                        return Err(Failed::Conflict);
                    }
                }
                Change::TokenOwner {
                    token_id,
                    impu,
                    until,
                } => {
                    // Dossier Q-6 across instances: the token is ours to bind only if nobody
                    // else holds it within its window.
                    let n = tx.execute(
                        &st.token_owner,
                        &[
                            &token_id.as_str(),
                            &impu.as_str(),
                            &secs(*until),
                            &secs(now),
                        ],
                    )?;
                    if n != 1 {
                        return Err(Failed::Conflict);
                    }
                }
                Change::KeyMessage { message_id, until } => {
                    // RFC 3830 5.4 across instances: an I_MESSAGE is accepted (or spent) once.
                    // One the read saw live is being spent again by a refusal: keep it.
                    let seen = read
                        .messages
                        .get(message_id)
                        .copied()
                        .flatten()
                        .is_some_and(|u| u > now);
                    let n = if seen {
                        tx.execute(
                            &st.key_message_again,
                            &[&message_id.as_str(), &secs(*until)],
                        )?
                    } else {
                        tx.execute(
                            &st.key_message_new,
                            &[&message_id.as_str(), &secs(*until), &secs(now)],
                        )?
                    };
                    if n != 1 {
                        return Err(Failed::Conflict);
                    }
                }
                Change::ClearReplay => postgres_store::clear_replay(&mut tx)?,
            }
        }
        if self.last_gc.elapsed() > super::GC_EVERY {
            postgres_store::collect_lapsed(&mut tx, now)?;
            self.last_gc = Instant::now();
        }
        tx.commit()?;
        for (impu, v) in written {
            match v {
                Some(v) => self.versions.insert(impu, v),
                None => self.versions.remove(&impu),
            };
        }
        Ok(())
    }
}
