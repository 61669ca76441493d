//! Sightline's single source of truth, shared by the browser SDK and the edge collector:
//! what a message is (the Segment-spec wire format), and the rules both sides must apply
//! identically. Plain functions over plain data, no I/O; builds for native and wasm32.

#![cfg_attr(not(feature = "std"), no_std)]
//!
//! Without the default `std` feature only `campaign`, `consent`, `credentials`,
//! `identifiers`, `json_text`, `limits`, `path`, `pii` and `time` are built (on
//! `alloc`): what the browser SDK needs, without std's formatting and panic machinery.

extern crate alloc;

pub mod campaign;
pub mod consent;
pub mod credentials;
pub mod identifiers;
pub mod json_text;
pub mod limits;
#[cfg(feature = "std")]
pub mod message;
pub mod path;
#[cfg(feature = "std")]
mod pattern;
pub mod pii;
#[cfg(feature = "std")]
pub mod plan;
pub mod time;

#[cfg(feature = "std")]
pub use message::{Batch, Message, MessageType};
#[cfg(feature = "std")]
pub use plan::{Plan, PlanError, RawPiiPolicy, UnplannedPolicy, Violation, ViolationKind};
