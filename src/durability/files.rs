//! The files of `--log-dir` (format version 2): their names, what startup finds and keeps,
//! and the steps that make a new file durable before anything relies on it.
//!
//! * `corecache.log`: the marker (a version 2 header and nothing else). A version 1 build
//!   refuses the directory ("log format version 2") instead of starting empty beside it.
//! * `corecache.<generation>.log`: log segments, 16 lowercase hex digits. Records are appended
//!   to the newest; compaction starts a new one (rotation).
//! * `corecache.<generation>.snap`: a complete snapshot. Snapshot `g` holds every item the
//!   segments before `g` left, so replay reads it and then segments `g`, `g + 1`, ...
//! * `corecache.<generation>.snap.tmp`: a snapshot being written; never read.
//!
//! Startup keeps the newest snapshot and the segments from its generation on, and removes the
//! rest (older snapshots and segments, temporary files): a snapshot is renamed into place only
//! once it is complete and synced, so whatever a crash left, the newest snapshot plus the
//! segments after it hold every record that was synced.
//!
//! A version 1 directory (`corecache.log` with a version 1 header) is adopted at startup: the
//! file is renamed to segment 0 (its records are read as they are) and a marker is written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::record::{self, FileHeader, FileKind, HeaderError, Record, FILE_HEADER_BYTES};
use super::replay::{self, Scan};

/// The marker's name (the version 1 log's name).
pub const MARKER_FILE_NAME: &str = "corecache.log";
/// Where a new marker is written before it is renamed into place.
const MARKER_TEMP_NAME: &str = "corecache.log.tmp";
/// Bytes of the generation in a file name (16 hex digits).
const GENERATION_DIGITS: usize = 16;

/// A log segment's name.
pub fn segment_name(generation: u64) -> String {
    format!("corecache.{generation:016x}.log")
}

/// A complete snapshot's name.
pub fn snapshot_name(generation: u64) -> String {
    format!("corecache.{generation:016x}.snap")
}

/// The name a snapshot is written under until it is complete.
pub fn snapshot_temp_name(generation: u64) -> String {
    format!("corecache.{generation:016x}.snap.tmp")
}

/// What a file name in `--log-dir` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Segment(u64),
    Snapshot(u64),
    SnapshotTemp(u64),
    MarkerTemp,
}

/// Reads a file name; `None` for names that are not ours (left alone).
pub fn parse_name(name: &str) -> Option<Name> {
    if name == MARKER_TEMP_NAME {
        return Some(Name::MarkerTemp);
    }
    let rest = name.strip_prefix("corecache.")?;
    let (hex, ext) = rest.split_at_checked(GENERATION_DIGITS)?;
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let generation = u64::from_str_radix(hex, 16).ok()?;
    match ext {
        ".log" => Some(Name::Segment(generation)),
        ".snap" => Some(Name::Snapshot(generation)),
        ".snap.tmp" => Some(Name::SnapshotTemp(generation)),
        _ => None,
    }
}

/// One file to replay: its intact records lie between `records_from` and `records_to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayFile {
    pub path: PathBuf,
    pub generation: u64,
    pub records_from: u64,
    pub records_to: u64,
}

/// What startup found in `--log-dir`, with the newest segment open for appending.
#[derive(Debug)]
pub struct Opened {
    /// The directory, locked (`flock`) for as long as this handle lives.
    pub lock: File,
    /// The newest complete snapshot, if any, and whether it ends in its end record.
    pub snapshot: Option<ReplayFile>,
    pub snapshot_complete: bool,
    /// The segments to replay after it, oldest first; the last is `current`'s.
    pub segments: Vec<ReplayFile>,
    /// The newest segment, positioned at the end of its intact records.
    pub current: File,
    /// What the scans found, summed over the snapshot and the segments.
    pub scan: Scan,
    /// Bytes of the segments and of the snapshot kept.
    pub segment_bytes: u64,
    pub snapshot_bytes: u64,
    /// Files removed at startup (superseded segments and snapshots, temporary files).
    pub removed: u64,
}

/// Opens `dir` (creating it if needed): takes its lock, adopts a version 1 log, picks the
/// newest snapshot, removes what it supersedes, scans every file to replay, cuts a torn tail
/// off the newest segment and opens it for appending. Errors are one-line reasons for the
/// startup failure message.
pub fn open(dir: &Path) -> Result<Opened, String> {
    let shown = dir.display();
    fs::create_dir_all(dir).map_err(|e| format!("--log-dir {shown}: {e}"))?;
    let lock = File::open(dir).map_err(|e| format!("--log-dir {shown}: {e}"))?;
    flock(&lock).map_err(|e| format!("--log-dir {shown}: {e}"))?;
    check_marker(dir).map_err(|e| format!("--log-dir {shown}: {e}"))?;
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    let mut temps = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("--log-dir {shown}: {e}"))? {
        let entry = entry.map_err(|e| format!("--log-dir {shown}: {e}"))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_name) {
            Some(Name::Segment(g)) => segments.push(g),
            Some(Name::Snapshot(g)) => snapshots.push(g),
            Some(Name::SnapshotTemp(_) | Name::MarkerTemp) => temps.push(entry.path()),
            None => {}
        }
    }
    segments.sort_unstable();
    snapshots.sort_unstable();
    let from = snapshots.last().copied().unwrap_or(0);
    let mut scan = Scan::default();
    let (snapshot, snapshot_complete, snapshot_bytes) = match snapshots.last() {
        Some(&g) => {
            let (file, complete, len) = scan_snapshot(dir, g, &mut scan)?;
            (Some(file), complete, len)
        }
        None => (None, true, 0),
    };
    // Superseded files go: the newest snapshot holds what they held. (Not if it is damaged
    // or cut short, a bad copy, say: then the older files stay for someone to look at.)
    let removed = if snapshot_complete {
        remove_at_startup(dir, from, &segments, &snapshots, temps)?
    } else {
        0
    };
    segments.retain(|&g| g >= from);
    if segments.is_empty() {
        // A new directory, or a backup of a snapshot alone: records go to a new segment.
        let g = from.max(1);
        create_segment(dir, g).map_err(|e| format!("--log-dir {shown}: {e}"))?;
        segments.push(g);
    }
    let mut replay = Vec::new();
    let mut segment_bytes = 0;
    let last = segments.len() - 1;
    for (i, &g) in segments.iter().enumerate() {
        let (file, len) = scan_segment(dir, g, i == last, &mut scan)?;
        segment_bytes += len;
        replay.push(file);
    }
    let newest = replay.last().cloned().expect("a segment");
    let mut current = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&newest.path)
        .map_err(|e| format!("{}: {e}", newest.path.display()))?;
    current
        .seek(SeekFrom::Start(newest.records_to))
        .map_err(|e| format!("{}: {e}", newest.path.display()))?;
    Ok(Opened {
        lock,
        snapshot,
        snapshot_complete,
        segments: replay,
        current,
        scan,
        segment_bytes,
        snapshot_bytes,
        removed,
    })
}

/// Removes the temporary files, and the snapshots and segments older than generation `from`
/// (the newest snapshot's); syncs the directory if anything went. Returns how many files went.
fn remove_at_startup(
    dir: &Path,
    from: u64,
    segments: &[u64],
    snapshots: &[u64],
    temps: Vec<PathBuf>,
) -> Result<u64, String> {
    let mut stale = temps;
    stale.extend(
        snapshots
            .iter()
            .filter(|&&g| g < from)
            .map(|&g| dir.join(snapshot_name(g))),
    );
    stale.extend(
        segments
            .iter()
            .filter(|&&g| g < from)
            .map(|&g| dir.join(segment_name(g))),
    );
    for path in &stale {
        fs::remove_file(path).map_err(|e| format!("{}: cannot remove: {e}", path.display()))?;
    }
    if !stale.is_empty() {
        sync_dir(dir).map_err(|e| format!("--log-dir {}: {e}", dir.display()))?;
    }
    Ok(stale.len() as u64)
}

/// Reads `corecache.log`: a version 1 log is renamed to segment 0; a missing or cut-short
/// marker is written; anything else that is not our marker stops startup.
fn check_marker(dir: &Path) -> Result<(), String> {
    let path = dir.join(MARKER_FILE_NAME);
    let mut head = Vec::with_capacity(FILE_HEADER_BYTES);
    match File::open(&path) {
        Ok(f) => {
            f.take(FILE_HEADER_BYTES as u64)
                .read_to_end(&mut head)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return write_marker(dir).map_err(|e| format!("cannot write the marker: {e}"));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    match record::check_file_header(&head) {
        Ok(FileHeader {
            kind: FileKind::Marker,
            ..
        }) => Ok(()),
        Ok(FileHeader {
            version: record::FILE_VERSION_1,
            ..
        }) => {
            let to = dir.join(segment_name(0));
            if to.exists() {
                return Err(format!(
                    "both a version 1 log ({}) and {} exist; move one away",
                    path.display(),
                    to.display()
                ));
            }
            fs::rename(&path, &to)
                .and_then(|()| sync_dir(dir))
                .and_then(|()| write_marker(dir))
                .map_err(|e| format!("cannot adopt the version 1 log {}: {e}", path.display()))
        }
        Err(HeaderError::Short) if head.len() < record::FILE_HEADER_BYTES_V1 => {
            // Its creation was cut short.
            write_marker(dir).map_err(|e| format!("cannot write the marker: {e}"))
        }
        Err(HeaderError::Version(v)) => Err(format!(
            "{}: log format version {v}, this build reads versions 1 and {}",
            path.display(),
            record::FILE_VERSION
        )),
        Ok(_) | Err(_) => Err(format!(
            "{} is not a corecache log (or its header is damaged); move it away to start an \
             empty log",
            path.display()
        )),
    }
}

/// Writes the marker: a temporary file, synced, renamed into place, the directory synced.
fn write_marker(dir: &Path) -> io::Result<()> {
    let temp = dir.join(MARKER_TEMP_NAME);
    let mut f = File::create(&temp)?;
    f.write_all(&record::file_header(FileKind::Marker, 0, 0))?;
    f.sync_all()?;
    drop(f);
    fs::rename(&temp, dir.join(MARKER_FILE_NAME))?;
    sync_dir(dir)
}

/// Creates segment `generation` (refusing to overwrite one) with its header, and makes it
/// durable: the file, then the directory entry.
pub fn create_segment(dir: &Path, generation: u64) -> io::Result<File> {
    let path = dir.join(segment_name(generation));
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    f.write_all(&record::file_header(FileKind::Segment, generation, 0))?;
    f.sync_all()?;
    sync_dir(dir)?;
    Ok(f)
}

/// fsync of a directory: makes the creation, renaming or removal of its entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Checks and scans segment `generation`. The newest one (`last`) gets a cut-short header
/// rewritten and a torn tail cut, so records can be appended after its last intact one.
fn scan_segment(
    dir: &Path,
    generation: u64,
    last: bool,
    total: &mut Scan,
) -> Result<(ReplayFile, u64), String> {
    let path = dir.join(segment_name(generation));
    let shown = path.display();
    let mut file = OpenOptions::new()
        .read(true)
        .write(last)
        .open(&path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let (len, head) = read_head(&file, &shown)?;
    let header = match record::check_file_header(&head) {
        Ok(h) if h.kind == FileKind::Segment && (h.generation == generation || h.version == 1) => h,
        Err(HeaderError::Short) if last => {
            // Rotation was cut short: start the file afresh.
            let header = record::file_header(FileKind::Segment, generation, 0);
            file.set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
                .and_then(|()| file.write_all(&header))
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("{shown}: {e}"))?;
            let at = FILE_HEADER_BYTES as u64;
            return Ok((replay_file(path, generation, at, at), at));
        }
        Err(HeaderError::Short) => {
            // An older segment cut short at its creation holds no records.
            total.skipped_bytes += len;
            return Ok((replay_file(path, generation, len, len), len));
        }
        _ => return Err(header_refused(&path)),
    };
    let from = header.bytes as u64;
    file.seek(SeekFrom::Start(from))
        .map_err(|e| format!("{shown}: {e}"))?;
    let s = replay::scan(&mut file, from, len, |_, _| {}).map_err(|e| format!("{shown}: {e}"))?;
    add(total, &s);
    let mut to = s.end;
    if last {
        to = s.tail_from.unwrap_or(s.end);
        if to < len {
            file.set_len(to)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("{shown}: cannot cut the damaged tail: {e}"))?;
        }
    }
    Ok((replay_file(path, generation, from, to), to))
}

/// Checks and scans snapshot `generation`; returns it, whether it ends in its end record
/// (with the right count), and its length.
fn scan_snapshot(
    dir: &Path,
    generation: u64,
    total: &mut Scan,
) -> Result<(ReplayFile, bool, u64), String> {
    let path = dir.join(snapshot_name(generation));
    let shown = path.display();
    let mut file = File::open(&path).map_err(|e| format!("{shown}: {e}"))?;
    let (len, head) = read_head(&file, &shown)?;
    let header = match record::check_file_header(&head) {
        Ok(h) if h.kind == FileKind::Snapshot && h.generation == generation => h,
        _ => return Err(header_refused(&path)),
    };
    let from = header.bytes as u64;
    file.seek(SeekFrom::Start(from))
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut records = 0u64;
    let mut complete = false;
    let s = replay::scan(&mut file, from, len, |d, _| {
        complete = matches!(d.record, Record::SnapshotEnd { records: n } if n == records);
        records += 1;
    })
    .map_err(|e| format!("{shown}: {e}"))?;
    add(total, &s);
    complete &= s.skipped_bytes == 0;
    Ok((replay_file(path, generation, from, s.end), complete, len))
}

fn replay_file(path: PathBuf, generation: u64, from: u64, to: u64) -> ReplayFile {
    ReplayFile {
        path,
        generation,
        records_from: from,
        records_to: to,
    }
}

fn header_refused(path: &Path) -> String {
    format!(
        "{}: not a corecache log file of this kind and generation (or its header is damaged); \
         move it away",
        path.display()
    )
}

fn add(total: &mut Scan, s: &Scan) {
    total.records += s.records;
    total.skipped_bytes += s.skipped_bytes;
    total.damaged += s.damaged;
}

/// Takes an exclusive lock on the directory, so two servers never use one log.
fn flock(dir: &File) -> Result<(), String> {
    // SAFETY: flock on a descriptor this function borrows; no memory is passed.
    let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(String::from(
            "the log is in use by another corecache process",
        ))
    } else {
        Err(format!("cannot lock the log: {e}"))
    }
}

/// Removes the segments and snapshots older than `generation` (a complete snapshot of that
/// generation is durable), then syncs the directory. Returns the bytes of segments removed.
pub fn remove_superseded(dir: &Path, generation: u64) -> io::Result<u64> {
    let mut segment_bytes = 0;
    let mut removed = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let old = match name.to_str().and_then(parse_name) {
            Some(Name::Segment(g)) if g < generation => {
                segment_bytes += entry.metadata().map_or(0, |m| m.len());
                true
            }
            Some(Name::Snapshot(g)) => g < generation,
            _ => false,
        };
        if old {
            fs::remove_file(entry.path())?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(segment_bytes)
}

/// A file's length and its first [`FILE_HEADER_BYTES`] bytes (fewer if it is shorter).
fn read_head(file: &File, shown: &std::path::Display<'_>) -> Result<(u64, Vec<u8>), String> {
    let len = file.metadata().map_err(|e| format!("{shown}: {e}"))?.len();
    let mut head = Vec::with_capacity(FILE_HEADER_BYTES);
    file.take(FILE_HEADER_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok((len, head))
}

#[cfg(test)]
mod tests {
    use super::super::record::{encode_delete, encode_snapshot_end};
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corecache-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A file of `kind` with a delete record per key (their keys are what replay finds), and
    /// for a snapshot its end record.
    fn write(path: &Path, kind: FileKind, generation: u64, keys: &[&str]) {
        let mut bytes = record::file_header(kind, generation, 1).to_vec();
        for k in keys {
            encode_delete(&mut bytes, k.as_bytes(), 1);
        }
        if kind == FileKind::Snapshot {
            encode_snapshot_end(&mut bytes, keys.len() as u64, 1);
        }
        fs::write(path, bytes).unwrap();
    }

    /// The keys replay reads from what `open` keeps, in order.
    fn replayed(o: &Opened) -> Vec<String> {
        let mut keys = Vec::new();
        for f in o.snapshot.iter().chain(o.segments.iter()) {
            let mut file = File::open(&f.path).unwrap();
            file.seek(SeekFrom::Start(f.records_from)).unwrap();
            replay::scan(&mut file, f.records_from, f.records_to, |d, _| {
                if let Some(k) = d.record.key() {
                    keys.push(String::from_utf8(k.to_vec()).unwrap());
                }
            })
            .unwrap();
        }
        keys
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// Every state a crash can leave during a compaction from segment 1 to snapshot 2 (and
    /// the start of the next one) opens to a state that replays every record written.
    #[test]
    fn every_step_of_a_compaction_restarts_with_every_record() {
        let dir = temp_dir("steps");
        let seg = |g| dir.join(segment_name(g));
        let steps: [(&str, &dyn Fn()); 6] = [
            ("before the rotation", &|| {}),
            ("the new segment cut short", &|| {
                fs::write(seg(2), &record::file_header(FileKind::Segment, 2, 0)[..10]).unwrap();
            }),
            ("the snapshot half written", &|| {
                write(&seg(2), FileKind::Segment, 2, &["k3"]);
                fs::write(dir.join(snapshot_temp_name(2)), b"CCLOG\0\r\n\x02").unwrap();
            }),
            ("the snapshot renamed", &|| {
                write(
                    &dir.join(snapshot_name(2)),
                    FileKind::Snapshot,
                    2,
                    &["k1", "k2"],
                );
                // What an interrupted startup or compaction left of segment 1 is removed.
                write(&seg(1), FileKind::Segment, 1, &["k1", "k2"]);
            }),
            ("the next rotation", &|| {
                write(&seg(3), FileKind::Segment, 3, &["k4"]);
            }),
            ("the next snapshot half written", &|| {
                fs::write(dir.join(snapshot_temp_name(3)), b"partial").unwrap();
            }),
        ];
        write(&seg(1), FileKind::Segment, 1, &["k1", "k2"]);
        let mut expected: Vec<&str> = vec!["k1", "k2"];
        for (what, step) in steps {
            step();
            if what == "the snapshot half written" {
                expected.push("k3");
            }
            if what == "the next rotation" {
                expected.push("k4");
            }
            let o = open(&dir).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(replayed(&o), expected, "{what}");
            assert!(o.snapshot_complete, "{what}");
            let left = names(&dir);
            assert!(
                !left.iter().any(|n| n.ends_with(".tmp")),
                "{what}: {left:?}"
            );
            if o.snapshot.is_some() {
                assert!(!left.contains(&segment_name(1)), "{what}: {left:?}");
            }
            drop(o);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_version_1_log_becomes_segment_0() {
        let dir = temp_dir("v1");
        let mut bytes = record::file_header_v1().to_vec();
        encode_delete(&mut bytes, b"old", 1);
        fs::write(dir.join(MARKER_FILE_NAME), &bytes).unwrap();
        let o = open(&dir).unwrap();
        assert_eq!(replayed(&o), ["old"]);
        assert_eq!(o.segments.len(), 1);
        assert_eq!(o.segments[0].generation, 0);
        drop(o);
        assert_eq!(names(&dir), [segment_name(0).as_str(), MARKER_FILE_NAME]);
        let marker = fs::read(dir.join(MARKER_FILE_NAME)).unwrap();
        let header = record::check_file_header(&marker).unwrap();
        assert_eq!(header.kind, FileKind::Marker);
        // A second start reads segment 0 again and appends to it.
        let o = open(&dir).unwrap();
        assert_eq!(replayed(&o), ["old"]);
        drop(o);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(0x1a), "corecache.000000000000001a.log");
        assert_eq!(parse_name(&segment_name(0x1a)), Some(Name::Segment(0x1a)));
        assert_eq!(parse_name(&snapshot_name(7)), Some(Name::Snapshot(7)));
        assert_eq!(
            parse_name(&snapshot_temp_name(u64::MAX)),
            Some(Name::SnapshotTemp(u64::MAX))
        );
        assert_eq!(parse_name("corecache.log.tmp"), Some(Name::MarkerTemp));
        for other in [
            "corecache.log",
            "corecache.000000000000001A.log",
            "corecache.1.log",
            "corecache.000000000000001a.logx",
            "notes.txt",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    /// A damaged snapshot (bytes flipped, cut, or a stretch copied over another) never stops
    /// startup with a panic: a damaged header is refused with a message; damaged records are
    /// skipped, the rest loaded, and the snapshot reported incomplete.
    #[test]
    fn damaged_snapshots_are_reported_never_trusted() {
        let dir = temp_dir("damaged-snapshot");
        let keys: Vec<String> = (0..30).map(|i| format!("snap-key-{i}")).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let path = dir.join(snapshot_name(5));
        write(&path, FileKind::Snapshot, 5, &key_refs);
        let good = fs::read(&path).unwrap();
        let mut state: u64 = 0x0dd_ba11;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for round in 0..300 {
            let mut bad = good.clone();
            match round % 3 {
                0 => {
                    let at = next(bad.len());
                    bad[at] ^= 1 + next(255) as u8;
                }
                1 => bad.truncate(next(bad.len())),
                _ => {
                    let from = next(bad.len() - 40);
                    let to = next(bad.len() - 40);
                    let piece = good[from..from + 40].to_vec();
                    bad[to..to + 40].copy_from_slice(&piece);
                }
            }
            if bad == good {
                continue;
            }
            fs::write(&path, &bad).unwrap();
            match open(&dir) {
                Ok(o) => {
                    assert!(!o.snapshot_complete, "round {round}");
                    for k in replayed(&o) {
                        assert!(keys.contains(&k), "round {round}: {k}");
                    }
                }
                Err(e) => assert!(e.contains("damaged"), "round {round}: {e}"),
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
