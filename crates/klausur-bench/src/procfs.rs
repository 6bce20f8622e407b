//! Readers of /proc: a process's CPU time and resident memory, the load average, the CPU model.

use std::process::Command;

use anyhow::{bail, Context};

/// utime + stime (clock ticks, all threads) from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces or parentheses,
/// so fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let close = stat.rfind(')').context("no ')' in /proc/<pid>/stat")?;
    // After ")": field 3 (state) is index 0, so utime (field 14) is index 11, stime index 12.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    if fields.len() < 13 {
        bail!("/proc/<pid>/stat has too few fields");
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    Ok(utime + stime)
}

/// VmRSS in KiB from the text of `/proc/<pid>/status`.
pub fn parse_status_rss_kib(status: &str) -> anyhow::Result<u64> {
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let mut it = rest.split_whitespace();
            let value: u64 = it.next().context("VmRSS value")?.parse()?;
            return match it.next() {
                Some("kB") | None => Ok(value),
                Some(unit) => bail!("unexpected VmRSS unit {unit}"),
            };
        }
    }
    bail!("no VmRSS line in /proc/<pid>/status")
}

/// The three load averages from the text of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> anyhow::Result<[f64; 3]> {
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .map(|s| s.parse::<f64>())
        .collect::<Result<_, _>>()
        .context("bad /proc/loadavg")?;
    if v.len() != 3 {
        bail!("bad /proc/loadavg");
    }
    Ok([v[0], v[1], v[2]])
}

/// Busy clock ticks (everything but idle and iowait) of one CPU (`cpuN`) or of all (`cpu`) from
/// the text of `/proc/stat`.
pub fn parse_stat_busy_ticks(stat: &str, cpu: Option<usize>) -> anyhow::Result<u64> {
    let name = cpu.map_or_else(|| "cpu".to_string(), |c| format!("cpu{c}"));
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} line in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("bad /proc/stat line")?;
    if v.len() < 5 {
        bail!("/proc/stat line with too few fields");
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy: u64 = v.iter().take(8).sum::<u64>() - v[3] - v[4];
    Ok(busy)
}

/// Busy CPU seconds of one CPU (or of all) so far.
pub fn cpu_busy_seconds(cpu: Option<usize>, ticks_per_sec: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    Ok(parse_stat_busy_ticks(&stat, cpu)? as f64 / ticks_per_sec)
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// CPU seconds (user + system, all threads) of a process so far.
pub fn cpu_seconds(pid: u32, ticks_per_sec: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(parse_stat_cpu_ticks(&stat)? as f64 / ticks_per_sec)
}

/// Resident memory of a process, MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_status_rss_kib(&status)? as f64 / 1024.0)
}

pub fn loadavg() -> [f64; 3] {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t).ok())
        .unwrap_or([f64::NAN; 3])
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| parse_cpu_model(&t))
        .unwrap_or_else(|| "unknown".into())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that fails).
pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// Number of CPUs of the machine (not of this process's affinity mask, which pinning narrows).
pub fn nproc() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .map(|t| parse_cpu_count(&t))
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// The number of `processor` entries of `/proc/cpuinfo`.
pub fn parse_cpu_count(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim() == "processor")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let stat = "4242 (klau sur) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 2345 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat).expect("parse"), 325);
        assert!(parse_stat_cpu_ticks("12 (x) S 1 2").is_err());
        assert!(parse_stat_cpu_ticks("no parens").is_err());
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tklausur\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status).expect("rss"), 20480);
        assert!(parse_status_rss_kib("Name:\tx\n").is_err());
    }

    #[test]
    fn loadavg_and_cpu_model() {
        assert_eq!(
            parse_loadavg("0.52 1.10 2.00 3/456 7890\n").expect("loadavg"),
            [0.52, 1.10, 2.00]
        );
        assert!(parse_loadavg("0.5\n").is_err());
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            parse_cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(parse_cpu_model("processor: 0\n"), None);
        assert_eq!(
            parse_cpu_count(&format!("{cpuinfo}\nprocessor\t: 1\nmodel name\t: x\n")),
            2
        );
    }

    #[test]
    fn busy_ticks_per_cpu() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 60 5 30 400 10 2 1 1 0 0\ncpu1 40 0 20 600 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(parse_stat_busy_ticks(stat, None).expect("all"), 161);
        assert_eq!(parse_stat_busy_ticks(stat, Some(0)).expect("cpu0"), 99);
        assert_eq!(parse_stat_busy_ticks(stat, Some(1)).expect("cpu1"), 62);
        assert!(parse_stat_busy_ticks(stat, Some(2)).is_err());
        assert!(parse_stat_busy_ticks("cpu 1 2\n", None).is_err());
        assert!(cpu_busy_seconds(None, clock_ticks_per_sec()).expect("this machine") > 0.0);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid, clock_ticks_per_sec()).expect("cpu") >= 0.0);
        assert!(rss_mib(pid).expect("rss") > 0.0);
    }
}
