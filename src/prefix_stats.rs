//! `stats detail`: per-key-prefix counters, as memcached keeps them (`stats_prefix.c`).
//!
//! PURE: one [`PrefixStats`] per shard, fed by the shard for its own keys while enabled; the
//! runtime gathers every shard's [`PrefixStats::dump`] and merges them with [`merge_dumps`].
//!
//! memcached's rules: the prefix is the key up to the first delimiter (`stat_key_prefix`, `:`
//! unless `-D` names another); a key without it is not counted. `get` counts every key looked up (and `hit` the hits), `set` every
//! storage command, `del` every delete (hit or miss). Counters survive `stats detail off` and are
//! cleared by `stats reset`.
//!
//! Bounded: at most [`PREFIXES_MAX`] distinct prefixes per shard; later new prefixes are not
//! counted (memcached has no bound).

use std::collections::HashMap;

/// memcached's default `stat_key_prefix`.
pub const DELIMITER: u8 = b':';
/// Distinct prefixes one shard tracks.
pub const PREFIXES_MAX: usize = 4096;

/// One prefix's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCounts {
    pub get: u64,
    pub hit: u64,
    pub set: u64,
    pub del: u64,
}

/// A shard's prefix counters and its `stats detail on|off` switch.
#[derive(Debug)]
pub struct PrefixStats {
    pub enabled: bool,
    /// The byte that ends a key's prefix (`-D`).
    delimiter: u8,
    prefixes: HashMap<Vec<u8>, PrefixCounts>,
}

impl Default for PrefixStats {
    fn default() -> PrefixStats {
        PrefixStats::new(DELIMITER, false)
    }
}

impl PrefixStats {
    /// Counters for prefixes ending at `delimiter`, collecting from the start if `enabled`.
    pub fn new(delimiter: u8, enabled: bool) -> PrefixStats {
        PrefixStats {
            enabled,
            delimiter,
            prefixes: HashMap::new(),
        }
    }

    /// A `get` of `key` (hit or miss).
    pub fn record_get(&mut self, key: &[u8], hit: bool) {
        if let Some(c) = self.counts(key) {
            c.get += 1;
            c.hit += u64::from(hit);
        }
    }

    /// A storage command on `key`.
    pub fn record_set(&mut self, key: &[u8]) {
        if let Some(c) = self.counts(key) {
            c.set += 1;
        }
    }

    /// A delete of `key`.
    pub fn record_delete(&mut self, key: &[u8]) {
        if let Some(c) = self.counts(key) {
            c.del += 1;
        }
    }

    /// `stats reset`.
    pub fn clear(&mut self) {
        self.prefixes = HashMap::new();
    }

    fn counts(&mut self, key: &[u8]) -> Option<&mut PrefixCounts> {
        if !self.enabled {
            return None;
        }
        let delimiter = self.delimiter;
        let end = key.iter().position(|&b| b == delimiter)?;
        let prefix = &key[..end];
        if !self.prefixes.contains_key(prefix) {
            if self.prefixes.len() >= PREFIXES_MAX {
                return None;
            }
            self.prefixes
                .insert(prefix.to_vec(), PrefixCounts::default());
        }
        self.prefixes.get_mut(prefix)
    }

    /// `PREFIX <p> get <n> hit <n> set <n> del <n>\r\n` for every prefix (no `END`).
    pub fn dump(&self, out: &mut Vec<u8>) {
        for (prefix, c) in &self.prefixes {
            push_line(out, prefix, c);
        }
    }
}

fn push_line(out: &mut Vec<u8>, prefix: &[u8], c: &PrefixCounts) {
    out.extend_from_slice(b"PREFIX ");
    out.extend_from_slice(prefix);
    let tail = format!(
        " get {} hit {} set {} del {}\r\n",
        c.get, c.hit, c.set, c.del
    );
    out.extend_from_slice(tail.as_bytes());
}

/// Sums several shards' dumps by prefix and appends the lines sorted by prefix, then `END`.
pub fn merge_dumps(parts: &[u8], out: &mut Vec<u8>) {
    let mut sums: std::collections::BTreeMap<&[u8], PrefixCounts> = Default::default();
    for line in parts.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"PREFIX ") else {
            continue;
        };
        // The prefix holds no space (keys have none); eight fields follow it.
        let mut fields = rest.split(|&b| b == b' ');
        let Some(prefix) = fields.next() else {
            continue;
        };
        let numbers: Vec<u64> = fields
            .skip(1)
            .step_by(2)
            .map(|n| std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()))
            .collect::<Option<_>>()
            .unwrap_or_default();
        let [get, hit, set, del] = numbers[..] else {
            continue;
        };
        let sum = sums.entry(prefix).or_default();
        sum.get += get;
        sum.hit += hit;
        sum.set += set;
        sum.del += del;
    }
    for (prefix, c) in &sums {
        push_line(out, prefix, c);
    }
    out.extend_from_slice(b"END\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_prefix_only_when_enabled() {
        let mut s = PrefixStats::default();
        s.record_get(b"foo:a", true);
        s.enabled = true;
        s.record_get(b"foo:a", true);
        s.record_get(b"foo:b", false);
        s.record_get(b"nocolon", true);
        s.record_set(b"foo:a");
        s.record_delete(b"bar:x:y");
        let mut out = Vec::new();
        s.dump(&mut out);
        let mut merged = Vec::new();
        merge_dumps(&[out.clone(), out].concat(), &mut merged);
        assert_eq!(
            String::from_utf8(merged).unwrap(),
            "PREFIX bar get 0 hit 0 set 0 del 2\r\nPREFIX foo get 4 hit 2 set 2 del 0\r\nEND\r\n"
        );
        s.clear();
        let mut out = Vec::new();
        s.dump(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn the_delimiter_is_configurable() {
        let mut s = PrefixStats::new(b'#', true);
        s.record_set(b"a#1");
        s.record_set(b"b:2");
        let mut out = Vec::new();
        s.dump(&mut out);
        assert_eq!(out, b"PREFIX a get 0 hit 0 set 1 del 0\r\n");
    }

    #[test]
    fn prefixes_are_bounded() {
        let mut s = PrefixStats {
            enabled: true,
            ..PrefixStats::default()
        };
        for i in 0..PREFIXES_MAX + 10 {
            s.record_set(format!("p{i}:k").as_bytes());
        }
        assert_eq!(s.prefixes.len(), PREFIXES_MAX);
        s.record_set(b"p0:k");
        assert_eq!(s.prefixes[&b"p0"[..]].set, 2);
    }
}
