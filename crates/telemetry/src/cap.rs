//! A bound on the tenants one metric family labels.

use std::collections::HashSet;
use std::sync::Mutex;

/// The tenant label of everyone past the cap.
pub const OVERFLOW: &str = "_other";

/// The first `cap` distinct tenants a family sees keep their own label; every later one is
/// counted under [`OVERFLOW`]. First come, first kept: a family never relabels a series, so
/// counters stay monotonic. Tenant ids never start with `_`, so the overflow cannot collide
/// with a real tenant.
#[derive(Debug)]
pub struct TenantCap {
    cap: usize,
    seen: Mutex<HashSet<String>>,
}

impl TenantCap {
    pub fn new(cap: usize) -> TenantCap {
        TenantCap {
            cap,
            seen: Mutex::new(HashSet::new()),
        }
    }

    pub fn label(&self, tenant: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(tenant) {
            return tenant.to_owned();
        }
        if seen.len() < self.cap {
            seen.insert(tenant.to_owned());
            return tenant.to_owned();
        }
        OVERFLOW.to_owned()
    }
}
