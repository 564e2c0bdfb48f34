//! The CLI's exit codes.
//!
//! Stable; scripts may rely on them:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (the agent answered with an error, I/O, a bad answer) |
//! | 2 | usage: a bad flag or argument (clap), or a request the agent refused as invalid |
//! | 3 | the agent is not running or not reachable (no socket, stale socket, not a socket, no answer) |
//! | 4 | permission denied (the admin socket or the pinned maps need root) |
//! | 5 | not found: no pinned maps, or an unknown service or routing key |
//!
//! A failure's code is the first one in its error chain that has one
//! (`cli::exit_code`).

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNREACHABLE: u8 = 3;
pub const PERMISSION: u8 = 4;
pub const NOT_FOUND: u8 = 5;
