//! What the appliance reports about itself: one state per component, the URLs, recent errors.
//! The CLI prints it, the desktop app renders it; both read the same [`ApplianceStatus`].

use serde::Serialize;

/// The components the appliance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Nats,
    Gateway,
    Worker,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Nats, Component::Gateway, Component::Worker];

    pub fn label(self) -> &'static str {
        match self {
            Component::Nats => "nats-server",
            Component::Gateway => "gateway",
            Component::Worker => "worker",
        }
    }
}

/// The life of one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ComponentState {
    /// Not part of this configuration (e.g. NATS is external, or no local worker).
    Disabled,
    Starting,
    Running,
    Restarting {
        attempt: u32,
        reason: String,
    },
    Stopping,
    Stopped,
    Failed {
        error: String,
    },
}

impl ComponentState {
    pub fn is_running(&self) -> bool {
        matches!(self, ComponentState::Running)
    }
}

/// One component's state with when it was entered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStatus {
    #[serde(flatten)]
    pub state: ComponentState,
    /// Unix seconds when this state was entered.
    pub since: f64,
}

impl ComponentStatus {
    pub fn new(state: ComponentState) -> Self {
        ComponentStatus {
            state,
            since: pyoco_wire::python::time(),
        }
    }
}

/// Everything the appliance is running, and where to reach it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplianceStatus {
    pub nats: ComponentStatus,
    pub gateway: ComponentStatus,
    pub worker: ComponentStatus,
    /// The NATS URL the gateway and worker use (managed or external).
    pub nats_url: String,
    /// `http://host:port` of the gateway, once it is listening.
    pub api_url: Option<String>,
    /// The managed nats-server's monitoring URL, when it serves one.
    pub nats_monitor_url: Option<String>,
    pub data_dir: String,
}

impl ApplianceStatus {
    pub fn component(&self, c: Component) -> &ComponentStatus {
        match c {
            Component::Nats => &self.nats,
            Component::Gateway => &self.gateway,
            Component::Worker => &self.worker,
        }
    }

    pub(crate) fn component_mut(&mut self, c: Component) -> &mut ComponentStatus {
        match c {
            Component::Nats => &mut self.nats,
            Component::Gateway => &mut self.gateway,
            Component::Worker => &mut self.worker,
        }
    }

    /// Every enabled component is running.
    pub fn all_running(&self) -> bool {
        Component::ALL.iter().all(|c| {
            let s = &self.component(*c).state;
            s.is_running() || *s == ComponentState::Disabled
        })
    }
}
