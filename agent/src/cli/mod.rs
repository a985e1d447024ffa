//! The operator-facing subcommands that are more than a call into the daemon:
//! `doctor` (checks a box's setup, one line per check with a fix hint), `selftest` (what
//! the seller's real box does with a port, tried on a scratch port), `status` (prints
//! the running agent's status file) and the enrollment helpers (token from stdin, file
//! ownership when run as root), and the seller's own data (`export`, `erase`). `main.rs`
//! parses the command line and calls these.

pub mod box_safety;
pub mod check;
pub mod checks;
pub mod doctor;
pub mod enroll;
pub mod plane_checks;
pub mod selftest;
pub mod seller_data;
pub mod status;
