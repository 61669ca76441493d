//! Sightline's single source of truth, shared by the browser SDK and the edge collector:
//! what a message is (the Segment-spec wire format), and the rules both sides must apply
//! identically. Plain functions over plain data, no I/O; builds for native and wasm32.

pub mod campaign;
pub mod identifiers;
pub mod message;
mod pattern;
pub mod plan;
pub mod time;

pub use message::{Batch, Message, MessageType};
pub use plan::{Plan, PlanError, RawPiiPolicy, UnplannedPolicy, Violation, ViolationKind};
