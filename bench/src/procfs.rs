//! Memory and CPU time of a process, read from Linux's `/proc`.

use std::path::PathBuf;

/// Memory figures from `/proc/<pid>/status`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss: u64,
    /// Peak resident set size (`VmHWM`).
    pub peak_rss: u64,
    /// Threads (`Threads`).
    pub threads: u64,
}

/// Why a `/proc` figure could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read (the process is gone, or this is not Linux).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file did not hold the expected field.
    #[error("{} has no field {field}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
    },
}

fn read(path: PathBuf) -> Result<(PathBuf, String), Error> {
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// The memory of process `pid`; `None` reads this process (`/proc/self`).
pub fn memory(pid: Option<u32>) -> Result<Memory, Error> {
    let dir = pid.map_or_else(|| "self".to_string(), |p| p.to_string());
    let (path, text) = read(PathBuf::from(format!("/proc/{dir}/status")))?;
    let field = |name: &'static str| -> Result<u64, Error> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or(Error::Missing {
                path: path.clone(),
                field: name,
            })
    };
    Ok(Memory {
        rss: field("VmRSS")? * 1024,
        peak_rss: field("VmHWM")? * 1024,
        threads: field("Threads")?,
    })
}

/// CPU time (user + system) process `pid` has used so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let (path, text) = read(PathBuf::from(format!("/proc/{pid}/stat")))?;
    parse_cpu_ticks(&text).ok_or(Error::Missing {
        path,
        field: "utime/stime",
    })
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name (the
/// second field) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 if it cannot be asked.
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(42));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_memory_is_readable() {
        let m = memory(None).expect("/proc/self/status");
        assert!(m.rss > 0 && m.peak_rss >= m.rss && m.threads >= 1, "{m:?}");
        let ticks = cpu_ticks(std::process::id()).expect("/proc/self/stat");
        assert!(ticks < u64::MAX);
    }
}
