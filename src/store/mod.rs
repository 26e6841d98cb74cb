//! Durability (issue 13): the machine's [`Persist`] batches go to a store, and no response
//! leaves before the batch it waits for ([`mcx_model::Response::wait_for`]) is durable.
//!
//! - **One writer thread, group commit.** [`Store::submit`] queues a batch (called under the
//!   server's one lock, so batches queue in sequence order); the writer takes *everything*
//!   queued, writes it in one redb write transaction, commits (one fsync'd commit), then
//!   publishes the new durable sequence number. Requests that arrived while the disk was busy
//!   ride the next commit together: the busier the server, the larger the batches.
//! - **Persist, then send.** Senders wait with [`Store::wait`] (async) for the durable number to
//!   reach their response's `wait_for`; the UDP workers do not wait themselves (they hand the
//!   datagram to a task that does), so the next requests keep coming into the next batch.
//! - **Fail-stop.** A commit that fails ends the process (exit code 70, after logging the
//!   error): nothing acknowledged can be lost by carrying on, and a restart reloads what is
//!   durable.
//! - **Start-up** reads the whole store into a [`Snapshot`] for [`mcx_model::Input::Load`]; a
//!   store that cannot be read stops the start with an error naming the file and
//!   `mcx-authz store check`. Nothing is ever silently reset.
//!
//! Backends: [`redb`] (embedded, the default, `./mcx-data/`) and `memory` (nothing survives a
//! restart: tests and benchmarks that want no disk).

pub mod postgres;
pub mod redb;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mcx_model::{Persist, Seq, Snapshot, UnixTime};
use serde::Deserialize;

/// `[store]`: where the durable state lives.
///
/// ```toml
/// [store]
/// backend = "redb"        # the default; "memory" (nothing survives a restart); "postgres"
/// dir = "mcx-data"        # redb: the data directory (the file is <dir>/mcx.redb)
/// url = "host=127.0.0.1 port=5432 user=mcx dbname=mcx"   # postgres (`mcx-authz store migrate`)
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Which store.
    pub backend: Backend,
    /// The data directory of the embedded store.
    pub dir: PathBuf,
    /// The PostgreSQL connection string (libpq key=value or URL), for `backend = "postgres"`.
    pub url: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Redb,
            dir: PathBuf::from("mcx-data"),
            url: None,
        }
    }
}

impl StoreConfig {
    /// A store that keeps nothing (tests, benchmarks).
    pub fn memory() -> Self {
        StoreConfig {
            backend: Backend::Memory,
            ..StoreConfig::default()
        }
    }

    /// The embedded store in `dir`.
    pub fn redb(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            backend: Backend::Redb,
            dir: dir.into(),
            url: None,
        }
    }
}

/// The store kinds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded redb in [`StoreConfig::dir`].
    Redb,
    /// Nothing is kept: a restart loses everything (the pre-issue-13 behaviour).
    Memory,
    /// PostgreSQL at [`StoreConfig::url`] (one instance per database for now: see
    /// [`postgres`]).
    Postgres,
}

/// An uploaded CSK as the store keeps it beside the machine's tie: sealed by the shell
/// ([`mcx_sec::csk_at_rest`], under a key derived from the server's RSK), so the store never
/// holds the key in the clear and the machine never sees it. Written in the same transaction
/// as the tie ([`mcx_model::Change::Csk`]), removed with it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCsk {
    /// The CSK-ID (the tie's key).
    pub csk_id: mcx_model::CskId,
    /// The sealed key ([`mcx_sec::csk_at_rest::SEALED_LEN`] octets).
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedCsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedCsk({}, {} octets)",
            self.csk_id,
            self.sealed.len()
        )
    }
}

/// The sealed keys of one commit whose tie the commit leaves in place: a CSK accepted and
/// dropped within one group commit leaves no sealed key behind.
fn sealed_kept(batches: &[Persist], sealed: Vec<SealedCsk>) -> Vec<SealedCsk> {
    sealed
        .into_iter()
        .filter(|s| {
            let last = batches
                .iter()
                .rev()
                .flat_map(|b| b.changes.iter().rev())
                .find_map(|c| match c {
                    mcx_model::Change::Csk { csk_id, csk } if *csk_id == s.csk_id => Some(csk),
                    _ => None,
                });
            matches!(last, Some(Some(_)))
        })
        .collect()
}

/// Where a store keeps batches: one durable transaction per [`Writer::commit`].
pub trait Writer: Send + 'static {
    /// Writes `batches` and the `sealed` keys of the CSKs they tie in one transaction and makes
    /// it durable before returning; with `gc`, also forgets replay entries lapsed at that time.
    fn commit(
        &mut self,
        batches: &[Persist],
        sealed: &[SealedCsk],
        gc: Option<UnixTime>,
    ) -> anyhow::Result<()>;
}

/// Commit counters, for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Write transactions committed (each is one durable commit, i.e. one fsync round).
    pub commits: AtomicU64,
    /// Persist batches written (one per state-changing request or tick).
    pub batches: AtomicU64,
    /// The largest number of batches one commit carried.
    pub max_group: AtomicU64,
    /// Time spent committing, in microseconds.
    pub commit_micros: AtomicU64,
}

struct Queue {
    batches: Vec<Persist>,
    sealed: Vec<SealedCsk>,
    /// The latest machine time submitted: replay-window entries lapsed by it are garbage.
    now: UnixTime,
    stop: bool,
}

/// The durable store and its writer thread.
pub struct Store {
    kind: &'static str,
    path: PathBuf,
    queue: Mutex<Queue>,
    wake: Condvar,
    durable: Mutex<Seq>,
    durable_changed: Condvar,
    watch: tokio::sync::watch::Sender<Seq>,
    stats: StoreStats,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// What opening a store gives: the store (`None` for `memory`) and what it held.
pub struct Opened {
    /// The store, to submit batches to.
    pub store: Option<Arc<Store>>,
    /// Its content, for [`mcx_model::Input::Load`].
    pub snapshot: Snapshot,
    /// The uploaded CSKs' sealed keys (the shell opens them for its key store).
    pub sealed: Vec<SealedCsk>,
}

impl Store {
    /// Opens (creating if need be) the store `config` names and reads all of it.
    pub fn open(config: &StoreConfig) -> anyhow::Result<Opened> {
        match config.backend {
            Backend::Memory => Ok(Opened {
                store: None,
                snapshot: Snapshot::default(),
                sealed: Vec::new(),
            }),
            Backend::Redb => {
                let (db, snapshot) = redb::RedbStore::open(&config.dir)?;
                let sealed = db.sealed_csks().with_context(|| {
                    format!(
                        "reading the sealed CSKs of {}; inspect it with `mcx-authz store check`",
                        db.path().display()
                    )
                })?;
                let path = db.path().to_owned();
                let store = Store::start(Box::new(db), "redb", path, snapshot.seq);
                Ok(Opened {
                    store: Some(store),
                    snapshot,
                    sealed,
                })
            }
            Backend::Postgres => {
                let url = config.url.as_deref().ok_or_else(|| {
                    anyhow::anyhow!("[store] backend = \"postgres\" needs [store] url")
                })?;
                let (mut db, snapshot) = postgres::PgStore::open(url)?;
                let sealed = db.sealed_csks()?;
                let where_ = PathBuf::from(db.location());
                let store = Store::start(Box::new(db), "postgres", where_, snapshot.seq);
                Ok(Opened {
                    store: Some(store),
                    snapshot,
                    sealed,
                })
            }
        }
    }

    fn start(mut db: Box<dyn Writer>, kind: &'static str, path: PathBuf, seq: Seq) -> Arc<Store> {
        let (watch, _) = tokio::sync::watch::channel(seq);
        let store = Arc::new(Store {
            kind,
            path,
            queue: Mutex::new(Queue {
                batches: Vec::new(),
                sealed: Vec::new(),
                now: UnixTime(0),
                stop: false,
            }),
            wake: Condvar::new(),
            durable: Mutex::new(seq),
            durable_changed: Condvar::new(),
            watch,
            stats: StoreStats::default(),
            writer: Mutex::new(None),
        });
        let s = store.clone();
        let handle = std::thread::Builder::new()
            .name("mcx-store-writer".into())
            .spawn(move || s.write_loop(db.as_mut()))
            .expect("spawning the store writer thread");
        *lock(&store.writer) = Some(handle);
        store
    }

    /// Where the state lives: the redb file, or the PostgreSQL server and database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `redb` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Queues one batch. Call in sequence order (the server calls it under its one lock, in the
    /// order the machine emitted the batches).
    pub fn submit(&self, batch: Persist, sealed: Vec<SealedCsk>, now: UnixTime) {
        let mut q = lock(&self.queue);
        q.batches.push(batch);
        q.sealed.extend(sealed);
        q.now = q.now.max(now);
        drop(q);
        self.wake.notify_one();
    }

    /// The last durable sequence number.
    pub fn durable(&self) -> Seq {
        *lock(&self.durable)
    }

    /// Waits until `seq` is durable.
    pub async fn wait(&self, seq: Seq) {
        let mut rx = self.watch.subscribe();
        // The writer never drops the sender while the store lives; on shutdown nothing more
        // becomes durable, and the caller's task is cancelled with the runtime.
        let _ = rx.wait_for(|d| *d >= seq).await;
    }

    /// Blocks the calling thread until `seq` is durable.
    pub fn wait_blocking(&self, seq: Seq) {
        let mut d = lock(&self.durable);
        while *d < seq {
            d = self
                .durable_changed
                .wait(d)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The commit counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Writes what is queued, stops the writer and waits for it (graceful shutdown).
    pub fn close(&self) {
        lock(&self.queue).stop = true;
        self.wake.notify_one();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }

    fn write_loop(&self, db: &mut dyn Writer) {
        let mut last_gc = Instant::now();
        loop {
            let (batches, sealed, now, stop) = {
                let mut q = lock(&self.queue);
                while q.batches.is_empty() && !q.stop {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                (
                    std::mem::take(&mut q.batches),
                    std::mem::take(&mut q.sealed),
                    q.now,
                    q.stop,
                )
            };
            let sealed = sealed_kept(&batches, sealed);
            if batches.is_empty() && stop {
                return;
            }
            // Garbage collection of lapsed replay entries rides a commit now and then.
            let gc = (last_gc.elapsed() > GC_EVERY).then_some(now);
            let started = Instant::now();
            if let Err(e) = db.commit(&batches, &sealed, gc) {
                // Fail-stop (issue 13): a commit that failed may have lost nothing yet, but
                // carrying on could acknowledge what is not durable.
                tracing::error!(error = %format!("{e:#}"), path = %self.path.display(), "store commit failed: stopping (fail-stop); restart to reload the durable state");
                eprintln!(
                    "mcx-authz: store commit to {} failed: {e:#}; stopping (fail-stop)",
                    self.path.display()
                );
                std::process::exit(70);
            }
            if gc.is_some() {
                last_gc = Instant::now();
            }
            let micros = started.elapsed().as_micros() as u64;
            let n = batches.len() as u64;
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            self.stats.batches.fetch_add(n, Ordering::Relaxed);
            self.stats.max_group.fetch_max(n, Ordering::Relaxed);
            self.stats
                .commit_micros
                .fetch_add(micros, Ordering::Relaxed);
            let seq = batches.last().map_or(Seq::ZERO, |b| b.seq);
            {
                let mut d = lock(&self.durable);
                *d = (*d).max(seq);
            }
            self.durable_changed.notify_all();
            self.watch.send_replace(seq);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        lock(&self.queue).stop = true;
        self.wake.notify_one();
    }
}

/// How often lapsed replay-window entries are swept from the store.
const GC_EVERY: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcx_model::{
        Binding, Change, ClientId, Csk, CskId, Image, Impu, ImpuRecord, McId, Publication,
        Registration, Service, TokenId,
    };

    fn record(n: u64) -> ImpuRecord {
        ImpuRecord {
            registration: Some(Registration {
                expires_at: UnixTime(1000 + n),
                services: None,
            }),
            bindings: vec![(
                Service::Mcptt,
                ClientId::new(format!("client-{n}")),
                Binding {
                    mc_id: McId::new(format!("sip:user{n}@example.org")),
                    token_id: TokenId::new(format!("jti-{n}")),
                    token_exp: UnixTime(5000),
                    authorized_at: UnixTime(10),
                    publication: Some(Publication {
                        etag: mcx_model::ETag::new(format!("e{n}")),
                        expires_at: UnixTime(2000),
                    }),
                    settings: None,
                },
            )],
        }
    }

    fn tie(n: u32, kept: bool) -> Change {
        Change::Csk {
            csk_id: CskId::new(format!("{n:08x}")),
            csk: kept.then(|| Csk {
                mc_id: McId::new("sip:a@example.org"),
                impu: None,
                provisioned: false,
            }),
        }
    }

    fn sealed(n: u32) -> SealedCsk {
        SealedCsk {
            csk_id: CskId::new(format!("{n:08x}")),
            sealed: vec![n as u8; 45],
        }
    }

    /// A sealed key is written with its tie and removed with it, in the same transaction; a
    /// CSK accepted and dropped within one group commit leaves no key behind.
    #[test]
    fn a_sealed_csk_lives_and_dies_with_its_tie() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::redb(dir.path().join("data"));
        let store = Store::open(&config).unwrap().store.unwrap();
        let batch = |seq, changes| Persist {
            seq: Seq(seq),
            changes,
        };
        // 1 kept; 2 accepted then dropped in the same group; 3 dropped then accepted again.
        store.submit(batch(1, vec![tie(1, true)]), vec![sealed(1)], UnixTime(0));
        store.submit(batch(2, vec![tie(2, true)]), vec![sealed(2)], UnixTime(0));
        store.submit(batch(3, vec![tie(2, false)]), vec![], UnixTime(0));
        store.submit(
            batch(4, vec![tie(3, false), tie(3, true)]),
            vec![sealed(3)],
            UnixTime(0),
        );
        store.wait_blocking(Seq(4));
        store.close();
        drop(store);
        let opened = Store::open(&config).unwrap();
        assert_eq!(opened.sealed, vec![sealed(1), sealed(3)]);
        let store = opened.store.unwrap();
        store.submit(batch(5, vec![tie(1, false)]), vec![], UnixTime(0));
        store.wait_blocking(Seq(5));
        store.close();
        drop(store);
        assert_eq!(Store::open(&config).unwrap().sealed, vec![sealed(3)]);
    }

    /// Batches written by the writer thread come back, in order, after a reopen: the store is
    /// the in-memory image of the same batches, and the durable number is the last batch's.
    #[test]
    fn what_was_committed_is_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::redb(dir.path().join("data"));
        let opened = Store::open(&config).unwrap();
        assert_eq!(opened.snapshot, Snapshot::default());
        let store = opened.store.unwrap();
        let mut image = Image::new();
        for n in 1..=300u64 {
            let mut changes = vec![Change::Impu {
                impu: Impu::new(format!("sip:u{}@ims", n % 50)),
                record: (n % 7 != 0).then(|| record(n)),
            }];
            if n % 10 == 0 {
                changes.push(Change::Csk {
                    csk_id: CskId::new(format!("{n:08x}")),
                    csk: Some(Csk {
                        mc_id: McId::new("sip:a@example.org"),
                        impu: None,
                        provisioned: false,
                    }),
                });
                changes.push(Change::TokenOwner {
                    token_id: TokenId::new(format!("t{n}")),
                    impu: Impu::new("sip:u1@ims"),
                    until: UnixTime(n),
                });
            }
            let batch = Persist {
                seq: Seq(n),
                changes,
            };
            image.apply(&batch);
            store.submit(batch, Vec::new(), UnixTime(0));
        }
        store.wait_blocking(Seq(300));
        assert_eq!(store.durable(), Seq(300));
        let stats = store.stats();
        let commits = stats.commits.load(Ordering::Relaxed);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 300);
        assert!((1..=300).contains(&commits));
        store.close();
        drop(store);
        let again = Store::open(&config).unwrap();
        assert_eq!(again.snapshot, image.snapshot());
        assert_eq!(again.snapshot.seq, Seq(300));
        again.store.unwrap().close();
    }

    /// An existing file is never re-initialised, not even an empty one.
    #[test]
    fn an_empty_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(redb::FILE), b"").unwrap();
        let e = Store::open(&StoreConfig::redb(dir.path())).err().unwrap();
        let text = format!("{e:#}");
        assert!(text.contains("mcx-authz store check"), "{text}");
        assert!(text.contains("mcx.redb"), "{text}");
        assert_eq!(std::fs::read(dir.path().join(redb::FILE)).unwrap(), b"");
        // A valid redb file that is not ours.
        let other = tempfile::tempdir().unwrap();
        let path = other.path().join(redb::FILE);
        ::redb::Database::create(&path).unwrap();
        let e = Store::open(&StoreConfig::redb(other.path())).err().unwrap();
        assert!(format!("{e:#}").contains("not an mcx-authz store"), "{e:#}");
    }

    #[test]
    fn memory_keeps_nothing() {
        let opened = Store::open(&StoreConfig::memory()).unwrap();
        assert!(opened.store.is_none());
        assert_eq!(opened.snapshot, Snapshot::default());
    }
}
