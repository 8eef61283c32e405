//! The restartable cache's files (`-e PATH`), PURE: what `PATH.meta` says and how it is read.
//!
//! On a graceful stop (SIGUSR1, `shutdown graceful`) every shard writes its live items to
//! `PATH` as snapshot records (the log's record format, `doc/log-format.md`), and then
//! `PATH.meta` is written: its presence says the save finished. The next start with `-e PATH`
//! reads and removes `PATH.meta` and, when it checks out, restores `PATH`.
//!
//! `PATH.meta` is text, one entry per line, in the shape memcached's metadata file has: a tag
//! line `T<name>`, then `K<key> <value>` lines. An empty or malformed file is refused (the
//! server does not start, as memcached aborts on it); a well-formed file that does not fit
//! (another format version, a data file of another length) makes a clean start.

use std::path::{Path, PathBuf};

use super::record::{FILE_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::config::HASHPOWER_MAX;

/// The format version this build writes and restores.
pub const MEMFILE_VERSION: u64 = 1;

/// The tag of the one section corecache writes.
const TAG: &str = "corecache";

/// Bytes of `PATH.meta` read at most (a real one is a few hundred).
pub const META_BYTES_MAX: u64 = 64 * 1024;

/// What `PATH.meta` records about the save.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub version: u64,
    /// When the save started, Unix seconds.
    pub stop_unix: u64,
    /// The shard count of the server that saved (restore routes keys by the count now).
    pub shard_count: u16,
    /// Item and flush records in `PATH`.
    pub records: u64,
    /// `PATH`'s length.
    pub bytes: u64,
    /// `hash_power_level` when the save began (the base-2 logarithm of every shard's hash
    /// slots together): the restore starts the tables that large, as memcached's restart
    /// restores its hash power. 0 when the file does not say.
    pub hash_power: u8,
}

/// `PATH.meta` for `PATH`.
pub fn meta_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".meta");
    PathBuf::from(s)
}

impl Meta {
    /// The file's text.
    pub fn encode(&self) -> String {
        format!(
            "T{TAG}\nKversion {}\nKstop_time {}\nKshard_count {}\nKrecords {}\nKbytes {}\n\
             Khash_power {}\n",
            self.version,
            self.stop_unix,
            self.shard_count,
            self.records,
            self.bytes,
            self.hash_power
        )
    }

    /// Reads the file's text. `Err`: not a metadata file at all (empty, no tag, a line of
    /// another shape, a key missing or not a number). Unknown keys are passed over, so a later
    /// version may add some.
    pub fn parse(text: &str) -> Result<Meta, String> {
        let mut lines = text.lines();
        match lines.next() {
            None | Some("") => return Err(String::from("empty metadata file")),
            Some(line) if line.strip_prefix('T') == Some(TAG) => {}
            Some(line) => return Err(format!("not a corecache metadata file: {line:?}")),
        }
        let mut version = None;
        let mut stop_unix = None;
        let mut shard_count = None;
        let mut records = None;
        let mut bytes = None;
        let mut hash_power = 0;
        for line in lines {
            let Some((key, value)) = line.strip_prefix('K').and_then(|kv| kv.split_once(' '))
            else {
                return Err(format!("invalid metadata line: {line:?}"));
            };
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("invalid {key}: {value:?}"))
            };
            match key {
                "version" => version = Some(number()?),
                "stop_time" => stop_unix = Some(number()?),
                "shard_count" => {
                    let n = u16::try_from(number()?).map_err(|_| "invalid shard_count")?;
                    shard_count = Some(n);
                }
                "records" => records = Some(number()?),
                "bytes" => bytes = Some(number()?),
                "hash_power" => {
                    hash_power = u8::try_from(number()?)
                        .ok()
                        .filter(|&p| p <= HASHPOWER_MAX)
                        .ok_or("invalid hash_power")?;
                }
                _ => {}
            }
        }
        let need = |v: Option<u64>, key: &str| v.ok_or_else(|| format!("no {key} in metadata"));
        Ok(Meta {
            version: need(version, "version")?,
            stop_unix: need(stop_unix, "stop_time")?,
            shard_count: shard_count.ok_or("no shard_count in metadata")?,
            records: need(records, "records")?,
            bytes: need(bytes, "bytes")?,
            hash_power,
        })
    }

    /// Why the data file cannot be restored (`None`: it can): another format version, a
    /// length other than the one saved, or more records than its bytes can hold (the restore
    /// sizes hash tables by the record count, so it must not be trusted beyond that).
    pub fn unusable(&self, data_len: Option<u64>) -> Option<String> {
        if self.version != MEMFILE_VERSION {
            return Some(format!(
                "saved in format version {}, this build reads {MEMFILE_VERSION}",
                self.version
            ));
        }
        let room = self.bytes.saturating_sub(FILE_HEADER_BYTES as u64) / RECORD_HEADER_BYTES as u64;
        if self.records > room {
            return Some(format!(
                "the metadata names {} records, more than {} bytes hold",
                self.records, self.bytes
            ));
        }
        match data_len {
            None => Some(String::from("the memory file is missing")),
            Some(len) if len != self.bytes => Some(format!(
                "the memory file has {len} bytes, {} were saved",
                self.bytes
            )),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            version: MEMFILE_VERSION,
            stop_unix: 1_790_000_000,
            shard_count: 4,
            records: 12,
            bytes: 4096,
            hash_power: 17,
        }
    }

    #[test]
    fn meta_round_trips_and_names_its_file() {
        let m = meta();
        assert_eq!(Meta::parse(&m.encode()), Ok(m));
        assert_eq!(
            meta_path(Path::new("/dev/shm/cache")),
            PathBuf::from("/dev/shm/cache.meta")
        );
    }

    #[test]
    fn malformed_metadata_is_refused() {
        for text in [
            "",
            "\n",
            "Tmain\nKversion 1\n",
            "Kversion 1\n",
            "Tcorecache\nversion 1\n",
            "Tcorecache\nKversion\n",
            "Tcorecache\nKversion one\nKstop_time 1\nKshard_count 1\nKrecords 0\nKbytes 32\n",
            "Tcorecache\nKversion 1\nKstop_time 1\nKshard_count 70000\nKrecords 0\nKbytes 32\n",
            "Tcorecache\nKversion 1\nKstop_time 1\nKshard_count 1\nKrecords 0\n",
            "Tcorecache\nKversion 1\nKstop_time 1\nKshard_count 1\nKrecords 0\nKbytes 32\n\
             Khash_power 33\n",
        ] {
            assert!(Meta::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_file_without_hash_power_restores_tables_at_their_start_size() {
        let text = "Tcorecache\nKversion 1\nKstop_time 1\nKshard_count 1\nKrecords 0\nKbytes 32\n";
        assert_eq!(Meta::parse(text).map(|m| m.hash_power), Ok(0));
    }

    #[test]
    fn unknown_keys_are_passed_over() {
        let text = meta().encode() + "Klater_setting yes\n";
        assert_eq!(Meta::parse(&text), Ok(meta()));
    }

    #[test]
    fn other_versions_and_lengths_are_unusable() {
        let m = meta();
        assert_eq!(m.unusable(Some(4096)), None);
        assert!(m.unusable(None).unwrap().contains("missing"));
        assert!(m.unusable(Some(4095)).unwrap().contains("4095 bytes"));
        let later = Meta {
            version: MEMFILE_VERSION + 1,
            ..m
        };
        assert!(later.unusable(Some(4096)).unwrap().contains("version"));
        let inflated = Meta {
            records: 1 << 40,
            ..m
        };
        assert!(inflated.unusable(Some(4096)).unwrap().contains("records"));
    }
}
