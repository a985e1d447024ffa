//! The local side: the agent's own records on this box. `journal` (what must survive a
//! restart: command results, managed ports and their records), `audit` (what the seller
//! may read: every command executed here), `status` (how the agent is doing right now) and
//! `metrics` (its counters). Everything above writes here; nothing here imports the box or
//! plane side, so the records they share (port limits, rotation schedules, meter states)
//! are defined in the journal.

pub mod audit;
pub mod journal;
pub mod metrics;
pub mod status;
