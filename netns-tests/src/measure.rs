//! Measurements the tests, the demo and the bench share: a process's CPU time and resident
//! memory from `/proc`, a namespace's network counters, and quantiles of a sample.

use std::io;

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// The clock tick of `/proc/PID/stat`'s times.
#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the C library; no memory of ours is touched.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A process's CPU time (user + system, every thread), in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command name is in parentheses and may hold spaces: fields start after the last ')'
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| other(format!("/proc/{pid}/stat: {stat:?}")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15
    let tick = |i: usize| -> io::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| other(format!("/proc/{pid}/stat field {}: {stat:?}", i + 3)))
    };
    Ok((tick(11)? + tick(12)?) / clock_ticks())
}

/// A process's resident memory (VmRSS), in MiB.
pub fn rss_mib(pid: u32) -> io::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| other(format!("no VmRSS for pid {pid}")))
}

/// The `p` quantile by nearest rank over the finite values of `v` (p99 of 20 values is the
/// maximum); `None` for none.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s.get(i).copied()
}

/// The kernel's SNMP and extended TCP/IP counters of the namespace `ns` is in, named as `nstat`
/// names them (`TcpExtTCPOFOQueue`, `UdpRcvbufErrors`): /proc/net/netstat and /proc/net/snmp
/// read from inside the namespace.
pub fn net_counters(
    lab: &crate::lab::Lab,
    ns: &crate::lab::Ns,
) -> io::Result<std::collections::BTreeMap<String, u64>> {
    let out = lab.exec(ns, &["cat", "/proc/net/netstat", "/proc/net/snmp"])?;
    Ok(parse_net_counters(&String::from_utf8_lossy(&out.stdout)))
}

/// [`net_counters`]' parser: each group is a header line of names and a line of values, both
/// led by "Group:".
pub fn parse_net_counters(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut counters = std::collections::BTreeMap::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((group, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse::<u64>() {
                counters.insert(format!("{group}{name}"), v);
            }
        }
    }
    counters
}

/// How far counter `name` moved from `before` to `after` (0 where it is missing).
pub fn counter_delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    name: &str,
) -> u64 {
    after
        .get(name)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(name).copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_over_finite_values() {
        let v: Vec<f64> = (1..=20).map(f64::from).chain([f64::NAN]).collect();
        assert_eq!(percentile(&v, 0.99), Some(20.0));
        assert_eq!(percentile(&v, 0.5), Some(11.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn our_own_cpu_time_and_memory() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_ok_and(|s| s >= 0.0));
        assert!(rss_mib(me).is_ok_and(|m| m > 0.0));
    }
}
