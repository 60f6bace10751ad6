//! The memory `ResourceLimiter` of one store.

/// Enforces the memory limit for one store and remembers whether it refused a growth, so a
/// trap that follows is reported as `memory_limit` rather than a generic guest trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    max_bytes: usize,
    pub(crate) peak_bytes: usize,
    pub(crate) refused: bool,
}

impl MemoryLimiter {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            peak_bytes: 0,
            refused: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 100k entries is far beyond any real connector.
        Ok(desired <= 100_000)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter as _;

    use super::*;

    #[test]
    fn limiter_refuses_growth_past_the_cap_and_tracks_the_peak() {
        let mut limiter = MemoryLimiter::new(2 * 65536);
        assert!(limiter.memory_growing(0, 65536, None).expect("no trap"));
        assert!(
            limiter
                .memory_growing(65536, 2 * 65536, None)
                .expect("no trap")
        );
        assert!(!limiter.refused);
        assert!(
            !limiter
                .memory_growing(2 * 65536, 3 * 65536, None)
                .expect("no trap")
        );
        assert!(limiter.refused);
        assert_eq!(limiter.peak_bytes, 2 * 65536);
    }
}
