//! The tunnel protocol, sans I/O: [`frame`] is the codec, [`session`] the
//! state machine. Neither touches a socket or a clock, so both are driven
//! byte by byte in unit and property tests, and by the same driver code in
//! the simulated and the real world.

pub mod frame;
pub mod headers;
pub mod session;

pub use frame::{method, CancelReason, Decoder, Frame, FrameError, GoAwayCode, PROTOCOL_VERSION};
pub use headers::Headers;
pub use session::{Event, RequestHead, Role, Session, SessionConfig, SessionError};
