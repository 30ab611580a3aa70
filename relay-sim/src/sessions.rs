//! What a cloud front end remembers of the TLS sessions it issued tickets
//! for, so that a connector's next handshake resumes instead of starting
//! over.
//!
//! The real service resumes every connector of a tenant, however many: the
//! connector's SChannel offers the ticket of its last session at each
//! bootstrap and tunnel. rustls' own store keeps 256 sessions per server
//! configuration, and every connector of a world shares the cloud's few
//! service hosts, so past about a hundred connectors (each handshake issues
//! two tickets and uses one) the oldest, still-wanted sessions were pushed
//! out and every bootstrap paid a full handshake: each connector of a
//! world of 1,000 verified twice the signatures each of a world of 100
//! did. Its removal also searches a list of all keys, so a larger rustls
//! store costs each resumption a walk over every session held.
//!
//! [`Sessions`] keeps up to [`SESSIONS_MAX`] sessions, forgets the oldest
//! first, and finds, adds and removes in logarithmic time. It allocates as
//! it fills, not up front: a session for each handshake until it is used
//! or forgotten (the client uses the newer of each handshake's two tickets,
//! so the other waits to be forgotten; 30 simulated days of one connector
//! leave ~4,300 on the bootstrap host). Order is by insertion and keys are
//! compared as bytes: no hashing, nothing that depends on a process's
//! random state.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rustls::server::StoresServerSessions;

/// Sessions one server configuration remembers: room for the live
/// sessions of a fleet of thousands of connectors among the unused ones
/// that wait to be forgotten. A session with its client's certificate is
/// about 600 bytes (the 1,000-connector bench world held 8,000 in 4.7 MB
/// after its hour), so ~38 MiB for a configuration that has filled up.
pub const SESSIONS_MAX: usize = 1 << 16;

/// A server configuration's session store (see the module's doc).
pub struct Sessions {
    store: Mutex<Store>,
}

/// How many, never what: the values are sessions' secrets.
impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("held", &self.len()).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Store {
    /// Session id → (when it was stored, the session's state).
    by_id: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    /// When it was stored → session id: the oldest first.
    by_age: BTreeMap<u64, Vec<u8>>,
    /// The next insertion's stamp.
    next: u64,
    max: usize,
}

impl Sessions {
    /// A store that keeps at most `max` sessions (at least one).
    pub fn new(max: usize) -> Self {
        Self { store: Mutex::new(Store { max: max.max(1), ..Store::default() }) }
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store, whoever panicked while holding it: every operation leaves
    /// both maps consistent before it can panic (allocation aside).
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(SESSIONS_MAX)
    }
}

impl Store {
    fn put(&mut self, id: Vec<u8>, value: Vec<u8>) {
        let stamp = self.next;
        self.next += 1;
        if let Some((old, _)) = self.by_id.insert(id.clone(), (stamp, value)) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(stamp, id);
        while self.by_id.len() > self.max {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            self.by_id.remove(&oldest);
        }
    }

    fn take(&mut self, id: &[u8]) -> Option<Vec<u8>> {
        let (stamp, value) = self.by_id.remove(id)?;
        self.by_age.remove(&stamp);
        Some(value)
    }
}

impl StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.lock().put(key, value);
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().by_id.get(key).map(|(_, v)| v.clone())
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> Vec<u8> {
        i.to_be_bytes().to_vec()
    }

    #[test]
    fn a_session_is_found_until_taken() {
        let s = Sessions::new(4);
        assert!(s.put(id(1), b"one".to_vec()));
        assert_eq!(s.get(&id(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(s.get(&id(1)).as_deref(), Some(&b"one"[..]), "get leaves it");
        assert_eq!(s.take(&id(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(s.take(&id(1)), None, "a ticket is used once");
        assert_eq!(s.get(&id(2)), None);
        assert!(s.is_empty());
    }

    #[test]
    fn the_oldest_is_forgotten_first() {
        let s = Sessions::new(3);
        for i in 1..=3 {
            s.put(id(i), vec![i as u8]);
        }
        // Taking one makes room: nothing is pushed out by the next.
        s.take(&id(2));
        s.put(id(4), vec![4]);
        assert_eq!(s.len(), 3);
        assert!(s.get(&id(1)).is_some());
        // Full: the oldest left is the one forgotten.
        s.put(id(5), vec![5]);
        assert_eq!(s.get(&id(1)), None);
        assert!(s.get(&id(3)).is_some() && s.get(&id(4)).is_some() && s.get(&id(5)).is_some());
    }

    #[test]
    fn storing_an_id_again_replaces_it_and_makes_it_the_newest() {
        let s = Sessions::new(2);
        s.put(id(1), vec![1]);
        s.put(id(2), vec![2]);
        s.put(id(1), vec![11]);
        assert_eq!(s.len(), 2);
        s.put(id(3), vec![3]);
        assert_eq!(s.get(&id(2)), None, "2 was the oldest");
        assert_eq!(s.get(&id(1)), Some(vec![11]));
        assert_eq!(s.take(&id(1)), Some(vec![11]));
        assert_eq!(s.take(&id(3)), Some(vec![3]));
        assert!(s.is_empty());
        let store = s.lock();
        assert!(store.by_age.is_empty(), "no stamp outlives its session");
    }

    #[test]
    fn debug_shows_how_many_not_the_secrets() {
        let s = Sessions::new(2);
        s.put(id(1), b"secret".to_vec());
        let shown = format!("{s:?}");
        assert!(shown.contains("held: 1") && !shown.contains("115"), "{shown}");
    }

    #[test]
    fn a_store_of_none_still_keeps_the_last() {
        let s = Sessions::new(0);
        s.put(id(1), vec![1]);
        s.put(id(2), vec![2]);
        assert_eq!(s.len(), 1);
        assert!(s.get(&id(2)).is_some());
    }
}
