//! Storage contract: what the pipeline needs from a store, and an in-memory store used
//! by native tests. The D1 implementation lives in the Workers adapter.

use std::cell::RefCell;

/// A validated event, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub write_key: String,
    pub message_id: String,
    pub kind: &'static str,
    pub event: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    /// Skew-corrected event time (RFC 3339).
    pub timestamp: String,
    pub received_at: String,
    /// The full message as stored (JSON).
    pub payload: String,
}

/// An event set aside with the reasons it could not be accepted, so it can be fixed and
/// replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedEvent {
    pub write_key: String,
    pub message_id: Option<String>,
    /// JSON array of reason objects.
    pub reasons: String,
    pub payload: String,
    pub received_at: String,
}

/// Whether a store kept an event or already had one with that messageId.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Stored,
    Duplicate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreError(pub String);

/// What the pipeline writes to. Implementations must be idempotent on
/// (write_key, message_id): a retried delivery is answered `Duplicate` and not stored twice.
#[allow(async_fn_in_trait)] // the Workers runtime is single-threaded: futures need not be Send
pub trait EventStore {
    async fn insert_events(&self, events: &[StoredEvent]) -> Result<Vec<Insert>, StoreError>;
    async fn quarantine(&self, events: &[QuarantinedEvent]) -> Result<(), StoreError>;
}

/// An in-memory store for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub events: RefCell<Vec<StoredEvent>>,
    pub quarantined: RefCell<Vec<QuarantinedEvent>>,
    /// When set, every call fails with this message.
    pub fail_with: RefCell<Option<String>>,
}

impl EventStore for MemoryStore {
    async fn insert_events(&self, events: &[StoredEvent]) -> Result<Vec<Insert>, StoreError> {
        if let Some(e) = self.fail_with.borrow().clone() {
            return Err(StoreError(e));
        }
        let mut stored = self.events.borrow_mut();
        Ok(events
            .iter()
            .map(|e| {
                let dup = stored
                    .iter()
                    .any(|s| s.write_key == e.write_key && s.message_id == e.message_id);
                if dup {
                    Insert::Duplicate
                } else {
                    stored.push(e.clone());
                    Insert::Stored
                }
            })
            .collect())
    }

    async fn quarantine(&self, events: &[QuarantinedEvent]) -> Result<(), StoreError> {
        if let Some(e) = self.fail_with.borrow().clone() {
            return Err(StoreError(e));
        }
        self.quarantined.borrow_mut().extend_from_slice(events);
        Ok(())
    }
}
