//! Counters and latency histograms, merged across threads, printed as a table or JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::host::{self, StealDelta};

/// The operation types reported separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get = 0,
    Set = 1,
    MultiGet = 2,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Get, Op::Set, Op::MultiGet];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::MultiGet => "multiget",
        }
    }
}

/// Latencies are recorded in nanoseconds, 3 significant digits, up to this bound (clamped).
const LATENCY_NS_MAX: u64 = 100_000_000_000;

/// Everything one thread counted; `merge` sums threads.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Per op: latency of measured requests that got a good reply.
    pub latency: [Histogram<u64>; 3],
    /// Per op: measured requests completed (good or not).
    pub measured_ops: [u64; 3],
    /// Per op: measured requests that failed (error reply, disconnect, timeout).
    pub measured_errors: [u64; 3],
    /// Keys asked for and found by measured gets (the hit ratio).
    pub measured_keys: u64,
    pub measured_hits: u64,
    /// Length of the measured window.
    pub measured_ns: u64,
    /// What the server saw over the whole run (prefill, warm-up, measured): get and multi-get
    /// commands, keys in them, keys found, set commands. Compare with `stats` deltas.
    pub wire_gets: u64,
    pub wire_keys: u64,
    pub wire_hits: u64,
    pub wire_sets: u64,
    pub prefill_sets: u64,
    pub read_through_sets: u64,
    /// Failures, by kind.
    pub error_replies: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub unexpected_replies: u64,
    pub protocol_errors: u64,
    pub disconnects: u64,
    pub timeouts: u64,
    pub connect_failures: u64,
    /// Requests lost with a dropped connection (their replies never came).
    pub lost_in_flight: u64,
    /// Open loop: requests not sent because the backlog was full.
    pub drops: u64,
    /// Requests still queued (never sent) when the run ended.
    pub unsent_at_end: u64,
    /// The prefill stopped early because nothing completed for a whole timeout.
    pub prefill_abandoned: bool,
}

impl Stats {
    pub fn new() -> Stats {
        let histogram = || {
            // 3 significant digits over 1 ns..100 s: fixed size, allocated once.
            Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap_or_else(|e| {
                unreachable!("constant histogram bounds are valid: {e}");
            })
        };
        Stats {
            latency: [histogram(), histogram(), histogram()],
            measured_ops: [0; 3],
            measured_errors: [0; 3],
            measured_keys: 0,
            measured_hits: 0,
            measured_ns: 0,
            wire_gets: 0,
            wire_keys: 0,
            wire_hits: 0,
            wire_sets: 0,
            prefill_sets: 0,
            read_through_sets: 0,
            error_replies: 0,
            client_errors: 0,
            server_errors: 0,
            unexpected_replies: 0,
            protocol_errors: 0,
            disconnects: 0,
            timeouts: 0,
            connect_failures: 0,
            lost_in_flight: 0,
            drops: 0,
            unsent_at_end: 0,
            prefill_abandoned: false,
        }
    }

    pub fn record(&mut self, op: Op, latency_ns: u64, ok: bool) {
        let i = op as usize;
        self.measured_ops[i] += 1;
        if ok {
            self.latency[i].saturating_record(latency_ns.clamp(1, LATENCY_NS_MAX));
        } else {
            self.measured_errors[i] += 1;
        }
    }

    pub fn error_total(&self) -> u64 {
        self.error_replies
            + self.client_errors
            + self.server_errors
            + self.unexpected_replies
            + self.protocol_errors
            + self.disconnects
            + self.timeouts
            + self.connect_failures
            + u64::from(self.prefill_abandoned)
    }

    pub fn merge(&mut self, other: &Stats) {
        for i in 0..3 {
            // Same bounds everywhere, so adding cannot fail.
            let _ = self.latency[i].add(&other.latency[i]);
            self.measured_ops[i] += other.measured_ops[i];
            self.measured_errors[i] += other.measured_errors[i];
        }
        self.measured_keys += other.measured_keys;
        self.measured_hits += other.measured_hits;
        self.measured_ns = self.measured_ns.max(other.measured_ns);
        self.wire_gets += other.wire_gets;
        self.wire_keys += other.wire_keys;
        self.wire_hits += other.wire_hits;
        self.wire_sets += other.wire_sets;
        self.prefill_sets += other.prefill_sets;
        self.read_through_sets += other.read_through_sets;
        self.error_replies += other.error_replies;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.unexpected_replies += other.unexpected_replies;
        self.protocol_errors += other.protocol_errors;
        self.disconnects += other.disconnects;
        self.timeouts += other.timeouts;
        self.connect_failures += other.connect_failures;
        self.lost_in_flight += other.lost_in_flight;
        self.drops += other.drops;
        self.unsent_at_end += other.unsent_at_end;
        self.prefill_abandoned |= other.prefill_abandoned;
    }

    fn seconds(&self) -> f64 {
        (self.measured_ns as f64 / 1e9).max(1e-9)
    }

    pub fn ops_total(&self) -> u64 {
        self.measured_ops.iter().sum()
    }

    pub fn hit_ratio(&self) -> f64 {
        if self.measured_keys == 0 {
            0.0
        } else {
            self.measured_hits as f64 / self.measured_keys as f64
        }
    }
}

/// Percentiles reported, as (label, quantile).
const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99_9", 0.999),
    ("p99_99", 0.9999),
];

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The human table.
pub fn table(s: &Stats, header: &str, steal: Option<&StealDelta>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(
        out,
        "{:<9}{:>11}{:>12}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "op", "count", "ops/s", "p50", "p90", "p99", "p99.9", "p99.99", "max", "errors"
    );
    for op in Op::ALL {
        let i = op as usize;
        if s.measured_ops[i] == 0 {
            continue;
        }
        let h = &s.latency[i];
        let _ = write!(
            out,
            "{:<9}{:>11}{:>12.0}",
            op.name(),
            s.measured_ops[i],
            s.measured_ops[i] as f64 / s.seconds()
        );
        for (_, q) in QUANTILES {
            let _ = write!(out, "{:>9.1}", us(h.value_at_quantile(q)));
        }
        let _ = writeln!(out, "{:>9.1}{:>9}", us(h.max()), s.measured_errors[i]);
    }
    let _ = writeln!(out, "(latencies in microseconds)");
    let _ = writeln!(
        out,
        "total     {} ops in {:.2} s = {:.0} ops/s; hit ratio {:.4} ({} of {} keys)",
        s.ops_total(),
        s.seconds(),
        s.ops_total() as f64 / s.seconds(),
        s.hit_ratio(),
        s.measured_hits,
        s.measured_keys
    );
    let _ = writeln!(
        out,
        "errors    {} total: ERROR {}, CLIENT_ERROR {}, SERVER_ERROR {}, unexpected {}, \
         protocol {}, disconnects {}, timeouts {}, connect failures {}, lost in flight {}",
        s.error_total(),
        s.error_replies,
        s.client_errors,
        s.server_errors,
        s.unexpected_replies,
        s.protocol_errors,
        s.disconnects,
        s.timeouts,
        s.connect_failures,
        s.lost_in_flight
    );
    let _ = writeln!(
        out,
        "backlog   drops {}, unsent at end {}{}",
        s.drops,
        s.unsent_at_end,
        if s.prefill_abandoned {
            "; PREFILL ABANDONED (no replies for a whole timeout)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "server    should see: cmd_get +{} (get commands {}), get_hits +{}, get_misses +{}, \
         cmd_set +{} (prefill {}, read-through {})",
        s.wire_keys,
        s.wire_gets,
        s.wire_hits,
        s.wire_keys - s.wire_hits,
        s.wire_sets,
        s.prefill_sets,
        s.read_through_sets
    );
    if let Some(steal) = steal {
        let _ = writeln!(out, "host      {}", host::describe(steal));
    }
    out
}

/// The same numbers as JSON. `config` is a JSON object describing the run.
pub fn json(s: &Stats, config: &str, steal: Option<&StealDelta>) -> String {
    let mut out = String::new();
    let _ = write!(out, "{{\"config\":{config},");
    let _ = write!(
        out,
        "\"duration_s\":{:.6},\"ops\":{},\"ops_per_sec\":{:.1},\"hit_ratio\":{:.6},\
         \"keys_requested\":{},\"hits\":{},\"ops_by_type\":{{",
        s.seconds(),
        s.ops_total(),
        s.ops_total() as f64 / s.seconds(),
        s.hit_ratio(),
        s.measured_keys,
        s.measured_hits
    );
    let mut first = true;
    for op in Op::ALL {
        let i = op as usize;
        if !first {
            out.push(',');
        }
        first = false;
        let h = &s.latency[i];
        let _ = write!(
            out,
            "\"{}\":{{\"count\":{},\"ops_per_sec\":{:.1},\"errors\":{},\"latency_us\":{{",
            op.name(),
            s.measured_ops[i],
            s.measured_ops[i] as f64 / s.seconds(),
            s.measured_errors[i]
        );
        for (label, q) in QUANTILES {
            let _ = write!(out, "\"{label}\":{:.3},", us(h.value_at_quantile(q)));
        }
        let _ = write!(
            out,
            "\"max\":{:.3},\"mean\":{:.3}}}}}",
            us(h.max()),
            h.mean() / 1000.0
        );
    }
    let _ = write!(
        out,
        "}},\"errors\":{{\"total\":{},\"error\":{},\"client_error\":{},\"server_error\":{},\
         \"unexpected\":{},\"protocol\":{},\"disconnects\":{},\"timeouts\":{},\
         \"connect_failures\":{},\"lost_in_flight\":{},\"prefill_abandoned\":{}}},\
         \"drops\":{},\"unsent_at_end\":{},",
        s.error_total(),
        s.error_replies,
        s.client_errors,
        s.server_errors,
        s.unexpected_replies,
        s.protocol_errors,
        s.disconnects,
        s.timeouts,
        s.connect_failures,
        s.lost_in_flight,
        s.prefill_abandoned,
        s.drops,
        s.unsent_at_end
    );
    let _ = write!(
        out,
        "\"server_totals\":{{\"get_commands\":{},\"cmd_get\":{},\"get_hits\":{},\
         \"get_misses\":{},\"cmd_set\":{},\"prefill_sets\":{},\"read_through_sets\":{}}},",
        s.wire_gets,
        s.wire_keys,
        s.wire_hits,
        s.wire_keys - s.wire_hits,
        s.wire_sets,
        s.prefill_sets,
        s.read_through_sets
    );
    // Where /proc/stat cannot be read, `null`.
    let _ = write!(
        out,
        "\"host\":{}}}",
        steal.map_or_else(|| "null".to_string(), host::json)
    );
    out
}

/// A JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_render() {
        let mut a = Stats::new();
        a.record(Op::Get, 1000, true);
        a.record(Op::Get, 3000, false);
        a.measured_keys = 2;
        a.measured_hits = 1;
        a.measured_ns = 1_000_000_000;
        let mut b = Stats::new();
        b.record(Op::Set, 2000, true);
        b.wire_sets = 5;
        b.measured_ns = 1_000_000_000;
        a.merge(&b);
        assert_eq!(a.ops_total(), 3);
        assert_eq!(a.measured_errors, [1, 0, 0]);
        assert_eq!(a.wire_sets, 5);
        assert!((a.hit_ratio() - 0.5).abs() < 1e-9);
        let t = table(&a, "run", None);
        assert!(t.contains("get") && t.contains("set") && !t.contains("multiget"));
        let j = json(&a, "{}", None);
        assert!(j.starts_with("{\"config\":{}") && j.ends_with(",\"host\":null}"));
        assert!(j.contains("\"cmd_set\":5"));
        assert_eq!(json_string("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
        let mut steal = StealDelta::default();
        steal.ms_by_cpu.insert(1, 110);
        let t = table(&a, "run", Some(&steal));
        assert!(t.ends_with(
            "host      steal 110 ms in the measured window (cpu1 110 ms): the \
             hypervisor did not run these CPUs for that long, and latency on them includes it\n"
        ));
        let j = json(&a, "{}", Some(&steal));
        assert!(j.ends_with(",\"host\":{\"steal_ms\":110,\"steal_ms_by_cpu\":{\"1\":110}}}"));
    }
}
