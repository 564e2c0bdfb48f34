//! The agent's life: start-up and its failures, hitless upgrades, and
//! faults under load (the agent killed or stopped, routes churning,
//! upstreams that hang or reset).

mod faults;
mod startup;
mod upgrade;
