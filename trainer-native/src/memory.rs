//! The process's own memory use, as the kernel counts it (Linux `/proc/self/status`); `None`
//! elsewhere. Reported by `upscale` and the benchmarks, checked by the bounded-memory test.

/// A `kB` field of /proc/self/status, e.g. `VmHWM` (peak resident set) or `VmRSS`.
#[must_use]
pub fn read_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Peak resident memory of this process so far, in MiB.
#[must_use]
pub fn peak_resident_mib() -> Option<f64> {
    read_status_kib("VmHWM").map(|kib| kib as f64 / 1024.0)
}
