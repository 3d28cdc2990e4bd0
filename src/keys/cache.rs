//! The tenant key cache: bounded, with a time to live, single-flight on misses.
//!
//! Entries are `Arc<Keyring>` snapshots. An evicted or expired snapshot is
//! zeroized when the last handle holding it is dropped (every key inside zeroizes
//! on drop). Concurrent misses for one tenant share one load: the first caller
//! runs it, the others wait for its result.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::keyring::{Keyring, Revocation};
use crate::error::Result;

type Cell = Arc<OnceCell<Arc<Keyring>>>;

pub(crate) struct KeyCache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
    /// Per-tenant revocation state, shared by every snapshot of the tenant and
    /// outliving cache entries (see `Revocation`).
    revocations: Mutex<HashMap<Arc<str>, Arc<Revocation>>>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<Arc<str>, Slot>,
    /// Insertion order for eviction; entries whose stamp no longer matches the
    /// slot are skipped.
    order: VecDeque<(Arc<str>, u64)>,
    next_stamp: u64,
}

struct Slot {
    cell: Cell,
    stamp: u64,
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// A fresh snapshot.
    Hit(Arc<Keyring>),
    /// Not cached (or expired); `previous` is the expired snapshot, if any, so the
    /// loader can reuse keys that did not change.
    Miss {
        cell: Cell,
        previous: Option<Arc<Keyring>>,
    },
}

impl KeyCache {
    /// The cached keys' time to live.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            inner: Mutex::new(Inner::default()),
            revocations: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections below cannot panic, but a poisoned lock still
        // holds consistent data, so recover it rather than propagate.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tenant's revocation state. Entries no snapshot uses are dropped once
    /// the map grows past twice the cache capacity; entries that ever revoked
    /// something are kept, so a snapshot loaded concurrently with a shred still
    /// sees it.
    pub(crate) fn revocation(&self, tenant: &str) -> Arc<Revocation> {
        let mut map = self
            .revocations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = map.get(tenant) {
            return Arc::clone(existing);
        }
        if map.len() >= self.capacity.saturating_mul(2).max(64) {
            map.retain(|_, r| Arc::strong_count(r) > 1 || r.is_used());
        }
        let fresh = Arc::new(Revocation::default());
        map.insert(Arc::from(tenant), Arc::clone(&fresh));
        fresh
    }

    /// Looks `tenant` up; on a miss, installs (or joins) the in-flight load slot.
    pub(crate) fn lookup(&self, tenant: &str) -> Lookup {
        let mut inner = self.lock();
        let mut previous = None;
        if let Some(slot) = inner.slots.get(tenant) {
            match slot.cell.get() {
                Some(keyring) if keyring.loaded_at.elapsed() < self.ttl => {
                    return Lookup::Hit(Arc::clone(keyring));
                }
                Some(expired) => previous = Some(Arc::clone(expired)),
                None => {
                    return Lookup::Miss {
                        cell: Arc::clone(&slot.cell),
                        previous: None,
                    };
                }
            }
        }
        let cell = inner.install(tenant, self.capacity);
        Lookup::Miss { cell, previous }
    }

    /// Runs (or joins) the load for a miss and returns its result. A failed
    /// load leaves no entry behind (so failures do not evict real tenants).
    pub(crate) async fn load<F, Fut>(
        &self,
        tenant: &str,
        cell: Cell,
        load: F,
    ) -> Result<Arc<Keyring>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<Keyring>>>,
    {
        let result = cell.get_or_try_init(load).await.map(Arc::clone);
        if result.is_ok() {
            self.lock().evict_beyond(self.capacity, tenant);
        } else {
            let mut inner = self.lock();
            if inner
                .slots
                .get(tenant)
                .is_some_and(|slot| Arc::ptr_eq(&slot.cell, &cell) && slot.cell.get().is_none())
            {
                inner.slots.remove(tenant);
            }
        }
        result
    }

    /// Drops `tenant`'s entry, so the next use reloads it from the store.
    pub(crate) fn invalidate(&self, tenant: &str) -> Option<Arc<Keyring>> {
        let mut inner = self.lock();
        inner
            .slots
            .remove(tenant)
            .and_then(|slot| slot.cell.get().cloned())
    }

    /// Number of cached tenants (including in-flight loads).
    pub(crate) fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

impl Inner {
    /// Evicts the oldest entries other than `keep` while the cache holds more
    /// than `capacity`. Runs after a successful load, so that failed loads
    /// (unknown tenants) never push real tenants out.
    fn evict_beyond(&mut self, capacity: usize, keep: &str) {
        let mut kept = Vec::new();
        while self.slots.len() > capacity {
            let Some((oldest, stamp)) = self.order.pop_front() else {
                break;
            };
            if *oldest == *keep {
                kept.push((oldest, stamp));
                continue;
            }
            if self.slots.get(&oldest).is_some_and(|s| s.stamp == stamp) {
                self.slots.remove(&oldest);
                crate::telemetry::cache(crate::telemetry::CacheEvent::Evicted);
            }
        }
        for entry in kept.into_iter().rev() {
            self.order.push_front(entry);
        }
    }

    /// Installs a fresh, empty slot for `tenant`.
    fn install(&mut self, tenant: &str, capacity: usize) -> Cell {
        let key: Arc<str> = Arc::from(tenant);
        let stamp = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1);
        let cell = Cell::default();
        self.slots.insert(
            Arc::clone(&key),
            Slot {
                cell: Arc::clone(&cell),
                stamp,
            },
        );
        self.order.push_back((key, stamp));
        // Replaced slots leave stale order entries behind; compact now and then
        // so the queue stays proportional to the cache.
        if self.order.len() > capacity.saturating_mul(2).max(64) {
            let slots = &self.slots;
            self.order
                .retain(|(k, s)| slots.get(k).is_some_and(|slot| slot.stamp == *s));
        }
        cell
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("len", &self.len())
            .finish()
    }
}
