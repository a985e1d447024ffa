//! The simulator's typed errors; their `Display` is the `message` of ProxySmart error replies.

use std::io;

/// Why a simulator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No real modem has that IMEI / NICK.
    #[error("no such modem")]
    NoSuchModem,
    /// No port has that portID.
    #[error("no such port")]
    NoSuchPort,
    /// The modem is offline; it cannot rotate.
    #[error("modem is offline, restart the modem")]
    ModemOffline,
    /// A rotation is already under way.
    #[error("modem is busy")]
    ModemBusy,
    /// `store_port` data was missing or malformed.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// Another port already uses that TCP port.
    #[error("port {0} is already in use")]
    PortInUse(u16),
    /// The proxy listener could not bind.
    #[error("cannot listen on port {port}: {source}")]
    Bind {
        /// The TCP port that failed.
        port: u16,
        /// The OS error.
        source: io::Error,
    },
}
