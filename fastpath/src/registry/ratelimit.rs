//! Fixed-window attempt limits per key (number, account). Hand-written rather than
//! `governor` because the registry's clock is injectable (tests move time explicitly)
//! and the windows must be exact counts ("5 per 10 minutes"), not token-bucket rates.

use std::{collections::HashMap, sync::Mutex};

pub struct RateLimiter {
    limit: u32,
    window_ms: i64,
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window_ms: i64) -> Self {
        Self {
            limit,
            window_ms,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `key` at `now`; `Err(retry_after_ms)` if over the limit.
    pub fn check(&self, key: &str, now: i64) -> Result<(), i64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded memory: forget finished windows whenever the table grows large.
        if windows.len() > 100_000 {
            let window_ms = self.window_ms;
            windows.retain(|_, (start, _)| now - *start < window_ms);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now - entry.0 >= self.window_ms {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            return Err(entry.0 + self.window_ms - now);
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_per_window() {
        let l = RateLimiter::new(2, 1000);
        assert!(l.check("a", 0).is_ok());
        assert!(l.check("a", 10).is_ok());
        assert_eq!(l.check("a", 100), Err(900));
        assert!(l.check("b", 100).is_ok());
        assert!(l.check("a", 1000).is_ok());
    }
}
