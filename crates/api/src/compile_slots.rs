//! How many uploads of one tenant may be loading (compiling) at once. Compiling a component
//! costs about a CPU-second; without a per-tenant bound one tenant's burst of uploads fills
//! the runtime's compilation queue (bounded overall by `max_concurrent_compiles`) and every
//! other tenant's upload waits behind it. Over its bound a tenant is refused at once (429 with
//! Retry-After) rather than queued: its own earlier uploads are still running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Uploads one tenant may have loading at once.
pub const PER_TENANT: usize = 2;

/// The per-tenant counters. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct CompileSlots {
    per_tenant: usize,
    busy: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for CompileSlots {
    fn default() -> Self {
        Self::new(PER_TENANT)
    }
}

/// One tenant's slot, given back when dropped (also when the request is cancelled).
#[derive(Debug)]
pub struct CompileSlot {
    slots: CompileSlots,
    tenant: String,
}

impl CompileSlots {
    pub fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant,
            busy: Arc::default(),
        }
    }

    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// A slot for `tenant`, or `None` when it already holds all of its own.
    pub fn try_acquire(&self, tenant: &str) -> Option<CompileSlot> {
        // A poisoned lock still holds consistent counts: each update is one statement.
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let count = busy.entry(tenant.to_owned()).or_default();
        if *count >= self.per_tenant {
            return None;
        }
        *count += 1;
        Some(CompileSlot {
            slots: self.clone(),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for CompileSlot {
    fn drop(&mut self) {
        let mut busy = self.slots.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = busy.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                busy.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_bounded_by_its_own_slots_only() {
        let slots = CompileSlots::new(2);
        let first = slots.try_acquire("a");
        let second = slots.try_acquire("a");
        assert!(first.is_some() && second.is_some());
        assert!(slots.try_acquire("a").is_none());
        assert!(slots.try_acquire("b").is_some());
        drop(first);
        let again = slots.try_acquire("a");
        assert!(again.is_some());
        drop((second, again));
        assert!(slots.busy.lock().map(|b| b.is_empty()).unwrap_or(false));
    }
}
