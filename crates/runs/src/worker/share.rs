//! How a process shares its free worker slots among the tenants that have runs to start.
//!
//! Each tenant's `max_concurrent_runs` is a ceiling across processes (the claim enforces
//! it); what a tenant gets of one process's workers under contention is its fair share:
//! `ceil(workers / (active + 1))`, where `active` counts the tenants with runs to start or
//! runs held here. The `+ 1` is a tenant that has not arrived yet. Tenants below their share
//! are served first, in the claim's turn order; beyond their share tenants take more only
//! while `reserve` slots stay free, so a tenant arriving at a busy process finds a free
//! worker at once instead of waiting for another tenant's step to end. The price is that a
//! process under contention keeps `reserve` workers (an eighth) idle.

use std::collections::{HashMap, HashSet};

use airlock_store::ClaimCandidate;

/// Slots kept free for tenants that arrive: an eighth of the workers, at least one when
/// there are two or more.
pub(super) fn reserve(workers: usize) -> usize {
    if workers < 2 { 0 } else { (workers / 8).max(1) }
}

/// How many of `free` slots each candidate gets, in the candidates' order; `held` is what
/// each tenant holds in this process now.
pub(super) fn allot(
    candidates: &[ClaimCandidate],
    held: &HashMap<String, usize>,
    workers: usize,
    free: usize,
) -> Vec<usize> {
    let active: HashSet<&str> = candidates
        .iter()
        .map(|c| c.tenant_id.as_str())
        .chain(
            held.iter()
                .filter(|(_, n)| **n > 0)
                .map(|(t, _)| t.as_str()),
        )
        .collect();
    let share = workers.div_ceil(active.len() + 1).max(1);
    let reserve = reserve(workers);
    let mut given = vec![0usize; candidates.len()];
    let mut left = free;
    let holding = |i: usize, given: &[usize]| {
        held.get(&candidates[i].tenant_id).copied().unwrap_or(0) + given[i]
    };
    // Below the share first, one slot per tenant per round so turns interleave; then
    // beyond it while the reserve stays free.
    for beyond_share in [false, true] {
        loop {
            let mut progressed = false;
            for i in 0..candidates.len() {
                if left == 0 {
                    return given;
                }
                if given[i] >= candidates[i].room() {
                    continue;
                }
                let allowed = if beyond_share {
                    left > reserve
                } else {
                    holding(i, &given) < share
                };
                if allowed {
                    given[i] += 1;
                    left -= 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }
    given
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(tenant: &str, running: i64, max: i64) -> ClaimCandidate {
        ClaimCandidate {
            tenant_id: tenant.to_owned(),
            running,
            max_running: max,
        }
    }

    #[test]
    fn a_tenant_alone_leaves_the_reserve_free() {
        let given = allot(&[candidate("a", 0, 256)], &HashMap::new(), 8, 8);
        assert_eq!(given, vec![7]);
        let given = allot(&[candidate("a", 0, 256)], &HashMap::new(), 64, 64);
        assert_eq!(given, vec![56]);
    }

    #[test]
    fn a_newcomer_gets_the_reserve_while_a_hog_holds_the_rest() {
        let held = HashMap::from([("hog".to_owned(), 7)]);
        let given = allot(
            &[candidate("hog", 7, 256), candidate("new", 0, 16)],
            &held,
            8,
            1,
        );
        assert_eq!(given, vec![0, 1]);
    }

    #[test]
    fn tenants_below_their_share_come_first_whatever_the_turn_order() {
        // The hog's turn comes first, but it holds more than its share: the slots go to
        // the others until they reach theirs.
        let held = HashMap::from([("hog".to_owned(), 5)]);
        let given = allot(
            &[
                candidate("hog", 5, 256),
                candidate("b", 0, 16),
                candidate("c", 0, 16),
            ],
            &held,
            8,
            3,
        );
        assert_eq!(given, vec![0, 2, 1]);
    }

    #[test]
    fn the_tenant_cap_is_a_ceiling() {
        let given = allot(&[candidate("a", 2, 3)], &HashMap::new(), 8, 8);
        assert_eq!(given, vec![1]);
    }

    #[test]
    fn many_saturated_tenants_each_get_about_their_share() {
        let candidates: Vec<_> = (0..50)
            .map(|i| candidate(&format!("t{i}"), 0, 256))
            .collect();
        let given = allot(&candidates, &HashMap::new(), 64, 64);
        // Every slot is used: tenants below their share may take the reserve too.
        assert_eq!(given.iter().sum::<usize>(), 64);
        assert!(given.iter().all(|n| (1..=2).contains(n)), "{given:?}");
    }
}
