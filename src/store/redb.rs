//! The embedded store: one redb file, `<dir>/mcx.redb`.
//!
//! Tables (keys are the spec's identifiers as text; values are JSON, so `store dump` prints them
//! as they are):
//!
//! | table | key | value |
//! |---|---|---|
//! | `impu` | IMPU | [`ImpuRecord`]: its third-party registration and every binding under it |
//! | `csk` | CSK-ID | [`mcx_model::Csk`]: the MC service ID and IMPU it is tied to (TS 33.180 5.4) |
//! | `token_owner` | token ID (`jti`) | `[IMPU, until]`: the replay window (dossier Q-6) |
//! | `key_message` | I_MESSAGE ID | `until` (RFC 3830 5.4 replay protection) |
//! | `csk_key` | CSK-ID | an uploaded CSK, sealed ([`mcx_sec::csk_at_rest`]: AES-256-GCM under a key derived from the server's RSK, bound to the tie); written and removed with its `csk` row |
//! | `meta` | `format`, `seq` | the format tag; the last durable sequence number |
//!
//! One SIP transaction changes one `impu` key (plus, for a CSK upload, its `csk` and
//! `key_message` keys). A commit is redb's default durability (`Durability::Immediate`): when
//! `commit` returns, the data is on disk.

use std::path::{Path, PathBuf};

use super::SealedCsk;
use anyhow::{bail, Context};
use mcx_model::{
    Change, Csk, CskId, Impu, ImpuRecord, KeyMessageId, Persist, Seq, Snapshot, TokenId, UnixTime,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

const IMPU: TableDefinition<&str, &[u8]> = TableDefinition::new("impu");
const CSK: TableDefinition<&str, &[u8]> = TableDefinition::new("csk");
const TOKEN_OWNER: TableDefinition<&str, &[u8]> = TableDefinition::new("token_owner");
const KEY_MESSAGE: TableDefinition<&str, u64> = TableDefinition::new("key_message");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Added after format v1 was first written: a store without it holds no sealed CSK.
const CSK_KEY: TableDefinition<&str, &[u8]> = TableDefinition::new("csk_key");

/// The format tag in `meta`: a file without it is not an mcx-authz store.
pub const FORMAT: &str = "mcx-authz store v1";

/// The file name inside the data directory.
pub const FILE: &str = "mcx.redb";

/// `Database::open`, with redb's own assertions on a damaged file (a truncated file trips one
/// in redb 2.6) turned into an error instead of a panic.
fn open_guarded(path: &Path) -> anyhow::Result<Database> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| Database::open(path));
    std::panic::set_hook(previous);
    match opened {
        Ok(r) => Ok(r?),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            bail!("redb refused the file ({why}): truncated or damaged")
        }
    }
}

impl super::Writer for RedbStore {
    fn commit(
        &mut self,
        batches: &[Persist],
        sealed: &[SealedCsk],
        gc: Option<UnixTime>,
    ) -> anyhow::Result<()> {
        self.write(batches, sealed, gc)
    }
}

/// The embedded store, open.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens `<dir>/mcx.redb`, creating the directory and an empty store when there is no file,
    /// and reads everything. A file that exists but cannot be read as our store is an error
    /// naming it and `mcx-authz store check`: never re-initialised.
    pub fn open(dir: &Path) -> anyhow::Result<(RedbStore, Snapshot)> {
        let path = dir.join(FILE);
        let shown = path.display().to_string();
        let advice = || {
            format!(
                "the store {shown} cannot be used; nothing was changed. Inspect it with `mcx-authz store check --dir {}`, and restore it from a backup or move it away to start empty",
                dir.display()
            )
        };
        let store = if path.exists() {
            // `Database::create` would initialise an empty file: only `open` an existing one.
            let db = open_guarded(&path).with_context(advice)?;
            RedbStore { db, path }
        } else {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
            let db = Database::create(&path)
                .with_context(|| format!("creating the store {}", path.display()))?;
            let store = RedbStore { db, path };
            store.initialise().with_context(advice)?;
            store
        };
        let snapshot = store.read_all().with_context(advice)?;
        Ok((store, snapshot))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn initialise(&self) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(IMPU)?;
            tx.open_table(CSK)?;
            tx.open_table(TOKEN_OWNER)?;
            tx.open_table(KEY_MESSAGE)?;
            tx.open_table(CSK_KEY)?;
            let mut meta = tx.open_table(META)?;
            meta.insert("format", FORMAT.as_bytes())?;
            meta.insert("seq", 0u64.to_be_bytes().as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Reads the whole store, checking the format tag and every record.
    pub fn read_all(&self) -> anyhow::Result<Snapshot> {
        let tx = self.db.begin_read()?;
        let meta = tx
            .open_table(META)
            .context("no meta table: not an mcx-authz store")?;
        let format = meta
            .get("format")?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        if format.as_deref() != Some(FORMAT) {
            bail!("format tag {format:?}, expected {FORMAT:?}");
        }
        let seq = match meta.get("seq")? {
            Some(v) => Seq(u64::from_be_bytes(
                v.value().try_into().context("meta seq is not 8 bytes")?,
            )),
            None => bail!("no sequence number in meta"),
        };
        let mut snapshot = Snapshot {
            seq,
            ..Snapshot::default()
        };
        for row in tx.open_table(IMPU)?.iter()? {
            let (k, v) = row?;
            let record: ImpuRecord = serde_json::from_slice(v.value())
                .with_context(|| format!("impu record {:?}", k.value()))?;
            snapshot.impus.push((Impu::new(k.value()), record));
        }
        for row in tx.open_table(CSK)?.iter()? {
            let (k, v) = row?;
            let csk: Csk = serde_json::from_slice(v.value())
                .with_context(|| format!("csk record {:?}", k.value()))?;
            snapshot.csks.push((CskId::new(k.value()), csk));
        }
        for row in tx.open_table(TOKEN_OWNER)?.iter()? {
            let (k, v) = row?;
            let (impu, until): (Impu, UnixTime) = serde_json::from_slice(v.value())
                .with_context(|| format!("token_owner record {:?}", k.value()))?;
            snapshot
                .token_owners
                .push((TokenId::new(k.value()), impu, until));
        }
        for row in tx.open_table(KEY_MESSAGE)?.iter()? {
            let (k, v) = row?;
            snapshot
                .key_messages
                .push((KeyMessageId::new(k.value()), UnixTime(v.value())));
        }
        Ok(snapshot)
    }

    /// Writes `batches` in one write transaction and commits it durably; with `gc`, also
    /// forgets replay entries lapsed at that time.
    pub fn commit(&mut self, batches: &[Persist], gc: Option<UnixTime>) -> anyhow::Result<()> {
        self.write(batches, &[], gc)
    }

    /// The sealed keys of the uploaded CSKs (none in a store written before `csk_key` existed).
    pub fn sealed_csks(&self) -> anyhow::Result<Vec<SealedCsk>> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(CSK_KEY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push(SealedCsk {
                csk_id: CskId::new(k.value()),
                sealed: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    fn write(
        &mut self,
        batches: &[Persist],
        sealed: &[SealedCsk],
        gc: Option<UnixTime>,
    ) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut impus = tx.open_table(IMPU)?;
            let mut csks = tx.open_table(CSK)?;
            let mut keys = tx.open_table(CSK_KEY)?;
            let mut owners = tx.open_table(TOKEN_OWNER)?;
            let mut messages = tx.open_table(KEY_MESSAGE)?;
            for b in batches {
                for c in &b.changes {
                    match c {
                        Change::Impu { impu, record } => match record {
                            Some(r) => {
                                impus.insert(impu.as_str(), serde_json::to_vec(r)?.as_slice())?;
                            }
                            None => {
                                impus.remove(impu.as_str())?;
                            }
                        },
                        Change::Csk { csk_id, csk } => match csk {
                            Some(c) => {
                                csks.insert(csk_id.as_str(), serde_json::to_vec(c)?.as_slice())?;
                            }
                            None => {
                                csks.remove(csk_id.as_str())?;
                                keys.remove(csk_id.as_str())?;
                            }
                        },
                        Change::TokenOwner {
                            token_id,
                            impu,
                            until,
                        } => {
                            owners.insert(
                                token_id.as_str(),
                                serde_json::to_vec(&(impu, until))?.as_slice(),
                            )?;
                        }
                        Change::KeyMessage { message_id, until } => {
                            messages.insert(message_id.as_str(), until.0)?;
                        }
                        Change::ClearReplay => {
                            owners.retain(|_, _| false)?;
                            messages.retain(|_, _| false)?;
                        }
                    }
                }
            }
            for s in sealed {
                keys.insert(s.csk_id.as_str(), s.sealed.as_slice())?;
            }
            if let Some(now) = gc {
                owners.retain(|_, v| {
                    serde_json::from_slice::<(Impu, UnixTime)>(v)
                        .map_or(true, |(_, until)| until > now)
                })?;
                messages.retain(|_, until| until > now.0)?;
            }
            let seq = batches.last().map_or(0, |b| b.seq.0);
            tx.open_table(META)?
                .insert("seq", seq.to_be_bytes().as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// redb's own consistency check (page checksums and allocator state), then every record
    /// read back: what `mcx-authz store check` runs.
    pub fn check(&mut self) -> anyhow::Result<Snapshot> {
        let clean = self
            .db
            .check_integrity()
            .with_context(|| format!("integrity check of {}", self.path.display()))?;
        if !clean {
            tracing::warn!(path = %self.path.display(), "redb repaired the file (an unclean shutdown)");
        }
        self.read_all()
    }

    /// Number of rows per table (`store check`).
    pub fn counts(&self) -> anyhow::Result<Vec<(&'static str, u64)>> {
        let tx = self.db.begin_read()?;
        Ok(vec![
            ("impu", tx.open_table(IMPU)?.len()?),
            ("csk", tx.open_table(CSK)?.len()?),
            ("token_owner", tx.open_table(TOKEN_OWNER)?.len()?),
            ("key_message", tx.open_table(KEY_MESSAGE)?.len()?),
            (
                "csk_key",
                match tx.open_table(CSK_KEY) {
                    Ok(t) => t.len()?,
                    Err(redb::TableError::TableDoesNotExist(_)) => 0,
                    Err(e) => return Err(e.into()),
                },
            ),
        ])
    }
}
