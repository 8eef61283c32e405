//! The restartable cache (`-e PATH`, memcached's `--memory-file`): a graceful stop (SIGUSR1,
//! `shutdown graceful`) saves every live item to `PATH`, and the next start restores them, so
//! a restart for an upgrade or a new setting does not empty the cache.
//!
//! memcached keeps its slab memory in the file all along (an mmap) and so needs the same
//! memory layout on restart. corecache writes the items out at the stop instead, as the
//! log's snapshot records, and stores them back one by one at startup: any `-m`, `-t`, `-I`
//! or `-C` may change between the two runs (items that no longer fit are counted as not
//! stored). TTLs keep running while the server is down: an item due meanwhile is not restored.
//!
//! Files (format in `durability::memfile`): the save writes `PATH` (a snapshot file header,
//! each shard's items, an end record), syncs it, then writes `PATH.meta` under a temporary
//! name and renames it into place, so `PATH.meta` exists only for a finished save. Startup
//! reads and removes `PATH.meta` before anything else, restores `PATH` if it checks out, then
//! removes `PATH` too (the items now live in memory): a crash later never restores old data.
//! A stop by SIGTERM or SIGINT saves nothing, as in memcached.
//!
//! Every shard restores in parallel from the whole file, keeping the keys it owns; every
//! shard saves its own items in turn, in bounded slices, through one shared writer.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Shared;
use crate::config::HASHPOWER_MAX;
use crate::durability::memfile::{meta_path, Meta, MEMFILE_VERSION, META_BYTES_MAX};
use crate::durability::record::{self, FileKind, FILE_HEADER_BYTES};
use crate::durability::replay;
use crate::shard::durable::Replay;
use crate::shard::Shard;
use crate::storage::WalkCursor;

/// Bytes of records a shard encodes before writing them out.
const SAVE_SLICE_BYTES: usize = 256 * 1024;

/// The memory file's state, shared by the executors.
#[derive(Debug)]
pub struct MemfileShared {
    pub path: PathBuf,
    /// What startup found to restore (`None`: a clean start).
    restore: Option<Meta>,
    restored: AtomicU64,
    expired: AtomicU64,
    refused: AtomicU64,
    skipped_bytes: AtomicU64,
    /// The save of a graceful stop, once it has begun.
    save: Mutex<Option<Save>>,
}

#[derive(Debug)]
struct Save {
    out: BufWriter<File>,
    records: u64,
    /// Hash slots of the shards saved so far.
    hash_slots: u64,
    /// The first write that failed (the save is then abandoned).
    error: Option<String>,
}

impl MemfileShared {
    /// Startup, as the `-u` user and before any executor: reads and removes `PATH.meta`, and
    /// decides whether `PATH` is restored. `Err` (the server does not start): a metadata file
    /// that is not one, or one that cannot be read or removed.
    pub fn open(path: &Path) -> Result<MemfileShared, String> {
        let shown = path.display();
        let restore = match read_meta(path)? {
            None => {
                eprintln!(
                    "corecache: -e {shown}: no metadata from a graceful stop, starting with an \
                     empty cache"
                );
                None
            }
            Some(meta) => match meta.unusable(data_len(path)).or_else(|| check_data(path)) {
                Some(why) => {
                    eprintln!("corecache: -e {shown}: {why}; starting with an empty cache");
                    None
                }
                None => Some(meta),
            },
        };
        if restore.is_none() {
            // As memcached (which maps the file at startup), a file that cannot be written
            // stops the start now rather than losing the save at the next stop.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("-e: {shown}: {e}"))?;
        }
        Ok(MemfileShared {
            path: path.to_path_buf(),
            restore,
            restored: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            skipped_bytes: AtomicU64::new(0),
            save: Mutex::new(None),
        })
    }

    /// Once every shard has restored: the startup line, and `PATH` removed.
    pub fn restore_done(&self) -> Option<String> {
        let meta = self.restore.as_ref()?;
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut line = format!(
            "-e {}: restored {} items saved {} s ago ({} expired meanwhile, {} not stored), \
             skipped {} damaged bytes",
            self.path.display(),
            load(&self.restored),
            unix_now().saturating_sub(meta.stop_unix),
            load(&self.expired),
            load(&self.refused),
            load(&self.skipped_bytes),
        );
        if let Err(e) = fs::remove_file(&self.path) {
            line.push_str(&format!("; cannot remove the memory file: {e}"));
        }
        Some(line)
    }

    /// A graceful stop, before the executors are told: creates `PATH` with its header.
    pub fn begin_save(&self, shard_count: u16) -> Result<(), String> {
        let shown = self.path.display();
        remove_if_there(&meta_path(&self.path))?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| format!("{shown}: {e}"))?;
        let mut out = BufWriter::with_capacity(SAVE_SLICE_BYTES, file);
        out.write_all(&record::file_header(FileKind::Snapshot, 0, shard_count))
            .map_err(|e| format!("{shown}: {e}"))?;
        *self.lock() = Some(Save {
            out,
            records: 0,
            hash_slots: 0,
            error: None,
        });
        Ok(())
    }

    /// An executor, once it has stopped serving: writes its shard's live items, if a save has
    /// begun.
    pub fn save_shard(&self, shard: &mut Shard, shared: &Shared) {
        let mut guard = self.lock();
        let Some(save) = guard.as_mut() else {
            return;
        };
        if save.error.is_some() {
            return;
        }
        let now = shared.now();
        let count = shared.config.shard_count;
        let mut buf = Vec::with_capacity(SAVE_SLICE_BYTES + 4096);
        let mut records = shard.snapshot_begin(count, now, &mut buf);
        let mut cursor = Some(WalkCursor::START);
        while let Some(from) = cursor {
            let (next, n) = shard.snapshot_slice(from, now, SAVE_SLICE_BYTES, usize::MAX, &mut buf);
            cursor = next;
            records += n;
            if let Err(e) = save.out.write_all(&buf) {
                save.error = Some(format!("{}: {e}", self.path.display()));
                return;
            }
            buf.clear();
        }
        save.records += records;
        save.hash_slots += shard.store().hash_slots() as u64;
    }

    /// After every executor has saved: the end record, `PATH` synced, then `PATH.meta`.
    /// Returns the records saved. On failure `PATH` is removed, so nothing half-written is
    /// ever restored.
    pub fn finish_save(&self, shard_count: u16) -> Result<u64, String> {
        let Some(save) = self.lock().take() else {
            return Err(String::from("no save was begun"));
        };
        let result = self.finish(save, shard_count);
        if result.is_err() {
            let _ = fs::remove_file(&self.path);
        }
        result
    }

    fn finish(&self, save: Save, shard_count: u16) -> Result<u64, String> {
        let shown = self.path.display();
        let err = |e: std::io::Error| format!("{shown}: {e}");
        if let Some(e) = save.error {
            return Err(e);
        }
        let Save {
            mut out,
            records,
            hash_slots,
            ..
        } = save;
        let stop_unix = unix_now();
        let mut end = Vec::new();
        record::encode_snapshot_end(&mut end, records, stop_unix);
        out.write_all(&end).map_err(err)?;
        let file = out.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        let bytes = file.metadata().map_err(err)?.len();
        let meta = Meta {
            version: MEMFILE_VERSION,
            stop_unix,
            shard_count,
            records,
            bytes,
            hash_power: hash_slots
                .checked_ilog2()
                .unwrap_or(0)
                .min(HASHPOWER_MAX.into()) as u8,
        };
        let final_path = meta_path(&self.path);
        let mut tmp = final_path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write_meta = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(meta.encode().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &final_path)?;
            // The rename itself is durable once the directory is synced.
            let dir = final_path.parent().filter(|d| !d.as_os_str().is_empty());
            File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
        };
        write_meta().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("{}: {e}", final_path.display())
        })?;
        Ok(records)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Save>> {
        // A panicking executor cannot leave the writer half-changed in a way that matters:
        // the records are checksummed, and a failed save is never given its metadata.
        self.save.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An executor at startup, before it serves: stores the items of `PATH` that its shard owns.
pub fn restore_into(shard: &mut Shard, me: u16, shared: &Shared) -> Result<(), String> {
    let Some(mf) = &shared.memfile else {
        return Ok(());
    };
    let Some(meta) = &mf.restore else {
        return Ok(());
    };
    let shown = mf.path.display();
    let err = |e: std::io::Error| format!("-e {shown}: {e}");
    let count = shared.config.shard_count;
    let mut st = Replay::new(me, count, shared.now());
    // The shard's share of the saved items, with room for an uneven split: the table is sized
    // once instead of growing (and rehashing every item) through the restore.
    let share = meta.records / u64::from(count.max(1));
    let share = usize::try_from(share + share / 16 + 64).unwrap_or(usize::MAX);
    shard.store_mut().reserve_items(share);
    // And at least as large as the tables were (memcached restores its hash power even when
    // its items are gone). Only a hint: a table that cannot have it grows as keys come.
    if meta.hash_power > 0 {
        let _ = shard
            .store_mut()
            .reserve_hash_slots((1usize << meta.hash_power) / usize::from(count.max(1)));
    }
    let mut file = File::open(&mf.path).map_err(err)?;
    file.seek(SeekFrom::Start(FILE_HEADER_BYTES as u64))
        .map_err(err)?;
    let scan = replay::scan(&mut file, FILE_HEADER_BYTES as u64, meta.bytes, |d, _| {
        shard.replay_if_mine(d, &mut st);
    })
    .map_err(err)?;
    shard.replay_finish(&st);
    mf.restored
        .fetch_add(shard.store().stats().curr_items, Ordering::Relaxed);
    mf.expired.fetch_add(st.expired, Ordering::Relaxed);
    mf.refused.fetch_add(st.refused, Ordering::Relaxed);
    if me == 0 {
        mf.skipped_bytes
            .fetch_add(scan.skipped_bytes, Ordering::Relaxed);
    }
    Ok(())
}

/// Reads and removes `PATH.meta`: `None` when there is none.
fn read_meta(path: &Path) -> Result<Option<Meta>, String> {
    let meta = meta_path(path);
    let shown = meta.display();
    let mut text = String::new();
    match File::open(&meta) {
        Ok(f) => {
            f.take(META_BYTES_MAX)
                .read_to_string(&mut text)
                .map_err(|e| format!("-e: {shown}: {e}"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("-e: {shown}: {e}")),
    }
    // Removed whatever it says, as memcached does: the next start must not restore this
    // save again after the cache has moved on.
    remove_if_there(&meta)?;
    Meta::parse(&text)
        .map(Some)
        .map_err(|e| format!("-e: {shown}: {e}"))
}

fn data_len(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// Why the data file's header is not a corecache snapshot's (`None`: it is).
fn check_data(path: &Path) -> Option<String> {
    let mut head = [0u8; FILE_HEADER_BYTES];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut head));
    match read.map(|()| record::check_file_header(&head)) {
        Err(e) => Some(format!("the memory file cannot be read: {e}")),
        Ok(Ok(h)) if h.kind == FileKind::Snapshot && h.bytes == FILE_HEADER_BYTES => None,
        Ok(_) => Some(String::from("the memory file is not a corecache save")),
    }
}

fn remove_if_there(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("-e: {}: {e}", path.display())),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl super::core::Core {
    /// At the end of serving: this core's part of a graceful stop's save (nothing otherwise).
    pub(super) fn save_memfile(&mut self) {
        let shared = std::sync::Arc::clone(&self.shared);
        if let Some(mf) = &shared.memfile {
            mf.save_shard(&mut self.shard, &shared);
        }
    }
}
