//! This process's memory as Linux tells it (`/proc/self`), for the costs a run reports.

/// The peak resident set since the process started or since [`reset_peak`].
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// The resident set now.
pub fn rss() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// Starts a new peak: the next [`peak_rss`] is the largest resident set from now on.
pub fn reset_peak() {
    // Writing 5 to clear_refs resets the peak resident set (Linux 4.0 and later); where
    // that is not possible the peak stays the process's, which is still an upper bound.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_peak_is_at_least_the_current_resident_set() {
        if let (Some(now), Some(peak)) = (super::rss(), super::peak_rss()) {
            assert!(peak >= now && now > 0);
        }
    }
}
