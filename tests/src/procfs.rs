//! What `/proc` says about the processes a test started (Linux): who is still alive, who is
//! whose child, how much memory each holds. The end-to-end tests use it to check that nothing
//! outlives the appliance and to measure its memory while hostile requests come in.

use std::path::Path;

/// The pids of processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<(i32, String)> {
    let needle = needle.to_string_lossy();
    let mut found = Vec::new();
    for pid in all_pids() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&*needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Every pid in `/proc`.
fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// The state letter (`R`, `S`, `Z`, …) and parent pid of `pid`, `None` once it is gone.
pub fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid …`: comm may contain spaces and parentheses; the last `)` ends it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True once `pid` has exited: gone from `/proc`, or a zombie nobody has reaped yet (it holds
/// no memory and runs no code).
pub fn is_gone(pid: i32) -> bool {
    !matches!(proc_state(pid), Some((state, _)) if !matches!(state, 'Z' | 'X' | 'x'))
}

/// Every live descendant of `pid` (children, their children, …), parents before children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| proc_state(p).map(|(_, ppid)| (p, ppid)))
        .collect();
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(parent) = todo.pop() {
        for &(child, _) in parents.iter().filter(|(_, ppid)| *ppid == parent) {
            if !out.contains(&child) {
                out.push(child);
                todo.push(child);
            }
        }
    }
    out
}

/// The command line of `pid`, its arguments separated by spaces (empty once it is gone).
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …), in KiB.
pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Reset `pid`'s peak resident memory (`VmHWM`) to its current one (`echo 5 >
/// /proc/<pid>/clear_refs`); false when the kernel refused.
pub fn reset_peak_rss(pid: i32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
