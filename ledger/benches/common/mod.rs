//! Helpers shared by the benchmark programs (`ledger/benches/journal.rs` and
//! `cli/benches/forensics.rs`, which includes this file by path): machine facts read
//! from `/proc`, medians and markdown tables.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

/// A file's text, or "" when it cannot be read (machine facts are best effort).
pub fn read_file(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// The file system type of the mount holding `dir` (longest matching mount point).
pub fn fs_type(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut best: Option<(usize, String, String)> = None;
    for line in read_file("/proc/mounts").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mp = f[1].replace("\\040", " ");
        if dir.starts_with(&mp) && best.as_ref().is_none_or(|b| mp.len() > b.0) {
            best = Some((mp.len(), f[2].to_string(), f[0].to_string()));
        }
    }
    best.map_or("unknown".into(), |(_, t, dev)| format!("{t} ({dev})"))
}

/// CPU count, CPU model and kernel release, for the header of a benchmark report.
pub fn cpus_model_kernel() -> (usize, String, String) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = read_file("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = read_file("/proc/sys/kernel/osrelease").trim().to_string();
    (cpus, model, kernel)
}

/// The median (NaN for no values).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Prints a markdown table; a header starting with `<` is a left-aligned column.
pub fn table(head: &[&str], rows: &[Vec<String>]) {
    let names: Vec<&str> = head.iter().map(|h| h.trim_start_matches('<')).collect();
    println!("| {} |", names.join(" | "));
    println!(
        "|{}",
        head.iter()
            .map(|h| if h.starts_with('<') { ":---|" } else { "---:|" })
            .collect::<String>()
    );
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
}

/// Peak resident set size of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    read_file("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}
