//! A logging rule both sides must follow, kept next to the wire format it protects.

/// Log directives (`target=level`, as in `RUST_LOG`) that every Farmhand process adds to its log
/// filter, whatever `RUST_LOG` says: WebSocket libraries print whole frames at DEBUG/TRACE,
/// and a `provision` frame carries a buyer's password.
pub const FRAME_LOG_GUARD: [&str; 2] = ["tungstenite=info", "tokio_tungstenite=info"];
