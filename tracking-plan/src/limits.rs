//! The wire limits both sides apply: the SDK never builds what the collector would
//! refuse (sizes in UTF-8 bytes, as the collector counts them).

/// One message, as JSON, at most.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// One request body (a batch), at most.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// A messageId, at most (characters).
pub const MAX_MESSAGE_ID_LEN: usize = 200;
