//! The agent's health, in one registry: the conditions it must meet to be
//! ready, and the problems its subsystems report.
//!
//! Each subsystem registers what it owns, once, at start: a [`Condition`]
//! that must hold before the agent is ready (programs attached and running,
//! routes synced, the Kubernetes watches permitted), and a [`Reporter`] whose
//! list of problems it replaces as its own state changes (objects a route
//! source ignored, destinations the data path could not steer, connections
//! that cannot be closed). `/readyz` and `detour status` read the registry;
//! neither knows who registered what. A subsystem's report replaces only
//! its own earlier one, so no report hides another's.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Where `detour status` shows a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// With the route source: what is not routed as configured.
    Routes,
    /// Among the agent's warnings: what the agent cannot do on this node.
    Agent,
}

#[derive(Debug)]
struct Registered {
    name: &'static str,
    holds: bool,
}

#[derive(Debug)]
struct Report {
    name: &'static str,
    area: Area,
    problems: Vec<String>,
}

#[derive(Debug, Default)]
struct Registry {
    /// In registration order.
    conditions: Vec<Registered>,
    /// In registration order: `detour status` lists problems in it.
    reports: Vec<Report>,
}

/// The registry; cheap to clone, every clone the same registry.
#[derive(Debug, Clone, Default)]
pub struct Health {
    registry: Arc<Mutex<Registry>>,
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a condition of readiness named `name`, not holding yet.
    pub fn condition(&self, name: &'static str) -> Condition {
        self.lock()
            .conditions
            .push(Registered { name, holds: false });
        Condition {
            health: self.clone(),
            name,
        }
    }

    /// Registers a subsystem's problems, shown in `area`; none yet.
    pub fn reporter(&self, name: &'static str, area: Area) -> Reporter {
        self.lock().reports.push(Report {
            name,
            area,
            problems: Vec::new(),
        });
        Reporter {
            health: self.clone(),
            name,
        }
    }

    /// Ready: every registered condition holds.
    pub fn is_ready(&self) -> bool {
        self.lock().conditions.iter().all(|c| c.holds)
    }

    /// The conditions that do not hold, by name.
    pub fn unmet(&self) -> Vec<&'static str> {
        let registry = self.lock();
        let unmet = registry.conditions.iter().filter(|c| !c.holds);
        unmet.map(|c| c.name).collect()
    }

    /// The problems reported in `area`, subsystem by subsystem in the order
    /// they registered.
    pub fn problems(&self, area: Area) -> Vec<String> {
        let registry = self.lock();
        let reports = registry.reports.iter().filter(|r| r.area == area);
        reports.flat_map(|r| r.problems.iter().cloned()).collect()
    }
}

/// One condition of readiness, set by the subsystem that owns it.
#[derive(Debug, Clone)]
pub struct Condition {
    health: Health,
    name: &'static str,
}

impl Condition {
    pub fn set(&self, holds: bool) {
        let mut registry = self.health.lock();
        for condition in registry
            .conditions
            .iter_mut()
            .filter(|c| c.name == self.name)
        {
            condition.holds = holds;
        }
    }

    pub fn holds(&self) -> bool {
        let registry = self.health.lock();
        let mut named = registry.conditions.iter().filter(|c| c.name == self.name);
        named.all(|c| c.holds)
    }
}

/// One subsystem's problems, replaced whole by each report.
#[derive(Debug, Clone)]
pub struct Reporter {
    health: Health,
    name: &'static str,
}

impl Reporter {
    /// Replaces this subsystem's problems with `problems`.
    pub fn report(&self, problems: Vec<String>) {
        let mut registry = self.health.lock();
        if let Some(report) = registry.reports.iter_mut().find(|r| r.name == self.name) {
            report.problems = problems;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_every_condition_holds() {
        let health = Health::default();
        assert!(health.is_ready(), "nothing registered: nothing to wait for");
        let started = health.condition("started");
        let synced = health.condition("routes synced");
        assert!(!health.is_ready());
        assert_eq!(health.unmet(), ["started", "routes synced"]);
        started.set(true);
        assert!(!health.is_ready());
        synced.set(true);
        assert!(health.is_ready() && synced.holds());
        started.set(false);
        assert_eq!(health.unmet(), ["started"]);
    }

    #[test]
    fn a_report_replaces_only_its_own_problems() {
        let health = Health::default();
        let watches = health.reporter("watches", Area::Routes);
        let updater = health.reporter("updater", Area::Routes);
        let reconnect = health.reporter("reconnect", Area::Agent);
        updater.report(vec!["2 of 4 steered destinations are not installed".into()]);
        watches.report(vec!["cannot watch Pod objects: forbidden".into()]);
        reconnect.report(vec!["cannot close connections".into()]);
        assert_eq!(
            health.problems(Area::Routes),
            [
                "cannot watch Pod objects: forbidden",
                "2 of 4 steered destinations are not installed"
            ]
        );
        watches.report(Vec::new());
        assert_eq!(
            health.problems(Area::Routes),
            ["2 of 4 steered destinations are not installed"]
        );
        assert_eq!(health.problems(Area::Agent), ["cannot close connections"]);
    }
}
