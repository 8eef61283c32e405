//! Steal time: how long the hypervisor kept this machine's CPUs from running, from `/proc/stat`.
//!
//! On a virtual machine a vCPU can be descheduled by the host for tens of milliseconds while
//! the guest has work to do. A server thread on that vCPU then answers nothing for that long,
//! whatever its own code does, and the stall lands in the run's tail. The report gives the steal
//! of the measured window, per CPU, so such a run can be told apart from a slow server.

use std::collections::BTreeMap;

/// Cumulative steal per CPU, in clock ticks, as `/proc/stat` gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steal {
    ticks: BTreeMap<u32, u64>,
}

/// Steal over a window, per CPU, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StealDelta {
    pub ms_by_cpu: BTreeMap<u32, u64>,
}

impl StealDelta {
    pub fn total_ms(&self) -> u64 {
        self.ms_by_cpu.values().sum()
    }
}

impl Steal {
    /// The steal counters now, or `None` where `/proc/stat` is missing or has none.
    pub fn sample() -> Option<Steal> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        Steal::parse(&text)
    }

    /// Reads the `cpuN` lines (the eighth number is steal); the `cpu` total line is skipped.
    /// Kernels before 2.6.11 have no steal column: `None`.
    pub fn parse(text: &str) -> Option<Steal> {
        let mut ticks = BTreeMap::new();
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let Some(cpu) = fields
                .next()
                .and_then(|name| name.strip_prefix("cpu"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let steal = fields.nth(7)?.parse::<u64>().ok()?;
            ticks.insert(cpu, steal);
        }
        (!ticks.is_empty()).then_some(Steal { ticks })
    }

    /// What each CPU present in both samples lost between `self` and `later`.
    pub fn until(&self, later: &Steal, ticks_per_sec: u64) -> StealDelta {
        let per_sec = ticks_per_sec.max(1);
        let ms_by_cpu = later
            .ticks
            .iter()
            .filter_map(|(&cpu, &end)| {
                let start = *self.ticks.get(&cpu)?;
                Some((cpu, end.saturating_sub(start) * 1000 / per_sec))
            })
            .collect();
        StealDelta { ms_by_cpu }
    }
}

/// The kernel's clock tick rate for `/proc/stat` (`USER_HZ`), 100 if it cannot be asked.
pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// The report's line: total and the CPUs that lost any time.
pub fn describe(delta: &StealDelta) -> String {
    let total = delta.total_ms();
    if total == 0 {
        return "steal 0 ms in the measured window".to_string();
    }
    let cpus: Vec<String> = delta
        .ms_by_cpu
        .iter()
        .filter(|&(_, &ms)| ms > 0)
        .map(|(cpu, ms)| format!("cpu{cpu} {ms} ms"))
        .collect();
    format!(
        "steal {total} ms in the measured window ({}): the hypervisor did not run these CPUs \
         for that long, and latency on them includes it",
        cpus.join(", ")
    )
}

/// The JSON object: `{"steal_ms":N,"steal_ms_by_cpu":{"0":N,...}}`.
pub fn json(delta: &StealDelta) -> String {
    let cpus: Vec<String> = delta
        .ms_by_cpu
        .iter()
        .map(|(cpu, ms)| format!("\"{cpu}\":{ms}"))
        .collect();
    format!(
        "{{\"steal_ms\":{},\"steal_ms_by_cpu\":{{{}}}}}",
        delta.total_ms(),
        cpus.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "cpu  4032054 3766 1653012 6762859 1817585 0 641822 17365 0 0\n\
        cpu0 2016027 1883 826506 3381429 908792 0 320911 8000 0 0\n\
        cpu1 2016027 1883 826506 3381430 908793 0 320911 9365 0 0\n\
        intr 123 4 5\n\
        ctxt 99\n";
    const AFTER: &str = "cpu  4032154 3766 1653012 6762859 1817585 0 641822 17377 0 0\n\
        cpu0 2016077 1883 826506 3381429 908792 0 320911 8001 0 0\n\
        cpu1 2016077 1883 826506 3381430 908793 0 320911 9376 0 0\n";

    #[test]
    fn steal_is_read_per_cpu_and_the_total_line_is_skipped() {
        let s = Steal::parse(BEFORE).expect("parsed");
        assert_eq!(s.ticks.len(), 2);
        assert_eq!(s.ticks.get(&0), Some(&8000));
        assert_eq!(s.ticks.get(&1), Some(&9365));
    }

    #[test]
    fn a_window_gives_milliseconds_per_cpu() {
        let a = Steal::parse(BEFORE).expect("parsed");
        let b = Steal::parse(AFTER).expect("parsed");
        let d = a.until(&b, 100);
        assert_eq!(d.ms_by_cpu.get(&0), Some(&10));
        assert_eq!(d.ms_by_cpu.get(&1), Some(&110));
        assert_eq!(d.total_ms(), 120);
        assert_eq!(
            describe(&d),
            "steal 120 ms in the measured window (cpu0 10 ms, cpu1 110 ms): the hypervisor \
             did not run these CPUs for that long, and latency on them includes it"
        );
        assert_eq!(
            json(&d),
            "{\"steal_ms\":120,\"steal_ms_by_cpu\":{\"0\":10,\"1\":110}}"
        );
    }

    #[test]
    fn no_steal_says_so_and_counters_never_go_negative() {
        let a = Steal::parse(AFTER).expect("parsed");
        let b = Steal::parse(BEFORE).expect("parsed");
        let d = a.until(&b, 100);
        assert_eq!(d.total_ms(), 0);
        assert_eq!(describe(&d), "steal 0 ms in the measured window");
    }

    #[test]
    fn a_cpu_that_came_online_in_between_is_left_out() {
        let a = Steal::parse("cpu0 1 2 3 4 5 6 7 8 0 0\n").expect("parsed");
        let b =
            Steal::parse("cpu0 1 2 3 4 5 6 7 9 0 0\ncpu1 1 2 3 4 5 6 7 500 0 0\n").expect("parsed");
        let d = a.until(&b, 100);
        assert_eq!(d.ms_by_cpu.len(), 1);
        assert_eq!(d.total_ms(), 10);
    }

    #[test]
    fn text_without_a_steal_column_or_cpu_lines_gives_nothing() {
        assert_eq!(Steal::parse("cpu0 1 2 3 4 5 6 7\n"), None);
        assert_eq!(Steal::parse("intr 1 2 3\n"), None);
        assert_eq!(Steal::parse(""), None);
    }

    #[test]
    fn this_machine_has_steal_counters() {
        // Linux has had the column since 2.6.11; the bench runs on Linux only.
        let s = Steal::sample().expect("/proc/stat with steal counters");
        assert!(!s.ticks.is_empty());
        assert!(ticks_per_sec() > 0);
    }
}
