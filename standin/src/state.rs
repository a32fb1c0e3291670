//! The stand-in's pipelines: their fields, their lifecycle, and their JSON shape.
//!
//! Owns the registry of pipelines and the rules for moving a pipeline between deployment
//! statuses. Transitional statuses (`Provisioning`, `Initializing`, `Stopping`) each last
//! `lifecycle_delay`; a pipeline keeps a plan of the statuses still to come and catches up on
//! it from timestamps whenever it is looked at, so nothing runs in the background and no task
//! polls. The JSON shape copies the real manager's answers field for field and in the same
//! order (`captured/manager-oss-0.337.json`).
//!
//! Deliberately not modelled: compilation (every pipeline's program is `Success`), storage
//! clearing, bootstrapping/approval, suspend (so no pipeline is ever `Suspended`),
//! deployment errors, connectors and statistics.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// The manager's `platform_version` for this API.
pub const PLATFORM_VERSION: &str = "0.337.0";

/// `deployment_status`: the subset of `CombinedStatus` the stand-in moves through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Stopped,
    Provisioning,
    Standby,
    Initializing,
    Paused,
    Running,
    Stopping,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stopped => "Stopped",
            Status::Provisioning => "Provisioning",
            Status::Standby => "Standby",
            Status::Initializing => "Initializing",
            Status::Paused => "Paused",
            Status::Running => "Running",
            Status::Stopping => "Stopping",
        }
    }

    /// `deployment_resources_status` while in this status.
    fn resources(self) -> &'static str {
        match self {
            Status::Stopped => "Stopped",
            Status::Provisioning => "Provisioning",
            Status::Stopping => "Stopping",
            _ => "Provisioned",
        }
    }

    /// `deployment_runtime_status` while in this status (`None` when no pipeline process runs).
    fn runtime(self) -> Option<&'static str> {
        match self {
            Status::Stopped | Status::Provisioning | Status::Stopping => None,
            other => Some(other.as_str()),
        }
    }

    /// Whether a pipeline process exists that requests can be forwarded to.
    pub fn is_deployed(self) -> bool {
        self.runtime().is_some()
    }
}

/// What a pipeline is asked to become once deployed (`RuntimeDesiredStatus`, the values the
/// stand-in supports as a target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Standby,
    Paused,
    Running,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Standby => "Standby",
            Target::Paused => "Paused",
            Target::Running => "Running",
        }
    }

    fn status(self) -> Status {
        match self {
            Target::Standby => Status::Standby,
            Target::Paused => Status::Paused,
            Target::Running => Status::Running,
        }
    }
}

/// `deployment_desired_status` (`CombinedDesiredStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    Stopped,
    Deployed(Target),
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Stopped => "Stopped",
            Desired::Deployed(target) => target.as_str(),
        }
    }
}

/// Status a seeded pipeline starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedStatus {
    Stopped,
    Standby,
    Paused,
    Running,
}

/// A pipeline present when the stand-in starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedPipeline {
    pub name: String,
    pub status: SeedStatus,
}

/// Which fields a GET returns (`PipelineFieldSelector`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    All,
    Status,
    StatusWithConnectors,
}

/// The body of `POST /v0/pipelines` and `PUT /v0/pipelines/{name}` (`PostPutPipeline`).
#[derive(Debug, Deserialize)]
pub struct PipelineSpec {
    pub name: String,
    pub description: Option<String>,
    pub runtime_config: Option<Value>,
    pub program_code: String,
    pub udf_rust: Option<String>,
    pub udf_toml: Option<String>,
    pub program_config: Option<Value>,
}

/// Why an action on a pipeline was refused; `handlers` turns it into the manager's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No pipeline process to talk to (503 `PipelineInteractionNotDeployed`).
    NotDeployed { status: Status, desired: Desired },
    /// The pipeline process refuses the action in its current status (400 `InvalidTransition`).
    InvalidTransition {
        action: &'static str,
        status: Status,
    },
    /// The manager refuses to change the desired status (400 `IllegalPipelineAction`).
    IllegalAction {
        status: Status,
        desired: Desired,
        requested: Desired,
        hint: &'static str,
    },
}

/// One pipeline.
#[derive(Debug)]
pub struct Pipeline {
    id: Uuid,
    name: String,
    description: String,
    created_at: SystemTime,
    version: u64,
    runtime_config: Value,
    program_code: String,
    udf_rust: String,
    udf_toml: String,
    program_config: Value,
    program_status_since: SystemTime,
    refresh_version: u64,
    storage_in_use: bool,
    deployment_id: Option<Uuid>,
    initial: Option<Target>,
    status: Status,
    status_since: SystemTime,
    /// When the current status began, on the monotonic clock that drives the plan.
    step_started: Instant,
    /// Statuses still to come, each `lifecycle_delay` after the previous one.
    plan: VecDeque<Status>,
    desired: Desired,
    desired_since: SystemTime,
    resources_since: SystemTime,
    runtime_since: Option<SystemTime>,
}

/// Serialized shape of a pipeline, in the manager's field order (a struct, not a
/// `serde_json::Value`, whose map would sort the keys).
#[derive(Serialize)]
pub struct PipelineView<'a> {
    id: String,
    name: &'a str,
    description: &'a str,
    tags: [(); 0],
    created_at: String,
    version: u64,
    platform_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime_config: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    program_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udf_rust: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udf_toml: Option<&'a str>,
    program_config: &'a Value,
    program_version: u64,
    program_status: &'static str,
    program_status_since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    program_error: Option<ProgramError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    program_info: Option<Value>,
    deployment_error: Option<Value>,
    refresh_version: u64,
    storage_status: &'static str,
    storage_status_details: Option<Value>,
    deployment_id: Option<String>,
    deployment_initial: Option<&'static str>,
    deployment_status: &'static str,
    deployment_status_since: String,
    deployment_desired_status: &'static str,
    deployment_desired_status_since: String,
    deployment_resources_status: &'static str,
    deployment_resources_status_since: String,
    deployment_resources_desired_status: &'static str,
    deployment_resources_desired_status_since: String,
    deployment_runtime_status: Option<&'static str>,
    deployment_runtime_status_details: Option<Value>,
    deployment_runtime_status_since: Option<String>,
    deployment_runtime_desired_status: Option<&'static str>,
    deployment_runtime_desired_status_since: Option<String>,
    bootstrap_policy: Option<Value>,
    silent_bootstrap: bool,
    concurrent_bootstrap: bool,
}

/// `program_error` of a program that compiled.
#[derive(Serialize)]
struct ProgramError {
    sql_compilation: Option<Value>,
    rust_compilation: Option<Value>,
    system_error: Option<String>,
}

/// Formats a timestamp the way the manager does: RFC 3339, microseconds, `Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

fn default_runtime_config() -> Value {
    json!({
        "workers": 8,
        "hosts": 1,
        "storage": {"backend": {"name": "default"}, "min_storage_bytes": null, "min_step_storage_bytes": null, "compression": "default", "cache_mib": null},
        "fault_tolerance": {"model": "none", "checkpoint_interval_secs": 60},
        "cpu_profiler": true,
        "tracing": false,
        "min_batch_size_records": 0,
        "max_buffering_delay_usecs": 0,
        "clock_resolution_usecs": 1000000,
        "env": {},
        "dev_tweaks": {}
    })
}

fn default_program_config() -> Value {
    json!({"profile": null, "cache": true, "runtime_version": null, "use_platform_compiler": false})
}

impl Pipeline {
    /// A stopped pipeline whose program compiled (`program_status: Success`).
    pub fn new(spec: PipelineSpec, now: SystemTime, instant: Instant) -> Pipeline {
        Pipeline {
            id: Uuid::new_v4(),
            name: spec.name,
            description: spec.description.unwrap_or_default(),
            created_at: now,
            version: 1,
            runtime_config: spec.runtime_config.unwrap_or_else(default_runtime_config),
            program_code: spec.program_code,
            udf_rust: spec.udf_rust.unwrap_or_default(),
            udf_toml: spec.udf_toml.unwrap_or_default(),
            program_config: spec.program_config.unwrap_or_else(default_program_config),
            program_status_since: now,
            refresh_version: 1,
            storage_in_use: false,
            deployment_id: None,
            initial: None,
            status: Status::Stopped,
            status_since: now,
            step_started: instant,
            plan: VecDeque::new(),
            desired: Desired::Stopped,
            desired_since: now,
            resources_since: now,
            runtime_since: None,
        }
    }

    /// A pipeline already in `seed`'s status, as if it had been started long ago.
    pub fn seeded(name: String, seed: SeedStatus, now: SystemTime, instant: Instant) -> Pipeline {
        let spec = PipelineSpec {
            name,
            description: None,
            runtime_config: None,
            program_code: String::new(),
            udf_rust: None,
            udf_toml: None,
            program_config: None,
        };
        let mut pipeline = Pipeline::new(spec, now, instant);
        let target = match seed {
            SeedStatus::Stopped => return pipeline,
            SeedStatus::Standby => Target::Standby,
            SeedStatus::Paused => Target::Paused,
            SeedStatus::Running => Target::Running,
        };
        pipeline.deploy(target, now, instant);
        pipeline.plan.clear();
        pipeline.set_status(target.status(), now, instant);
        pipeline
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn desired(&self) -> Desired {
        self.desired
    }

    /// Catches up on the plan: every step whose time has come takes effect, stamped with the
    /// time it was due rather than the time it was noticed.
    pub fn advance(&mut self, now: Instant, delay: Duration) {
        while let Some(next) = self.plan.front().copied() {
            let due = self.step_started + delay;
            if now < due {
                break;
            }
            self.plan.pop_front();
            let at = self.status_since + delay;
            self.set_status(next, at, due);
        }
    }

    fn set_status(&mut self, status: Status, at: SystemTime, instant: Instant) {
        if status.resources() != self.status.resources() {
            self.resources_since = at;
        }
        if status.runtime() != self.status.runtime() {
            self.runtime_since = status.runtime().map(|_| at);
        }
        self.status = status;
        self.status_since = at;
        self.step_started = instant;
        if status == Status::Stopped {
            self.deployment_id = None;
            self.initial = None;
        }
    }

    fn set_desired(&mut self, desired: Desired, at: SystemTime) {
        if self.desired != desired {
            self.desired = desired;
            self.desired_since = at;
        }
    }

    fn deploy(&mut self, target: Target, now: SystemTime, instant: Instant) {
        self.deployment_id = Some(Uuid::new_v4());
        self.initial = Some(target);
        self.storage_in_use = true;
        self.set_desired(Desired::Deployed(target), now);
        self.set_status(Status::Provisioning, now, instant);
        self.plan = match target {
            Target::Standby => VecDeque::from([Status::Standby]),
            other => VecDeque::from([Status::Initializing, other.status()]),
        };
    }

    /// `POST /start?initial=..`: Stopped → Provisioning → (Standby | Initializing → Paused|Running).
    pub fn start(
        &mut self,
        target: Target,
        now: SystemTime,
        instant: Instant,
    ) -> Result<(), Refusal> {
        match self.status {
            Status::Stopped => {
                self.deploy(target, now, instant);
                Ok(())
            }
            _ if self.desired == Desired::Deployed(target) => Ok(()),
            Status::Stopping => Err(Refusal::IllegalAction {
                status: self.status,
                desired: self.desired,
                requested: Desired::Deployed(target),
                hint: "Cannot restart the pipeline while it is stopping. Wait for it to stop before starting a new instance of the pipeline.",
            }),
            _ => Err(Refusal::IllegalAction {
                status: self.status,
                desired: self.desired,
                requested: Desired::Deployed(target),
                hint: "The pipeline is already deployed. Use '/pause', '/resume' or '/activate' to change its runtime status, or stop it first.",
            }),
        }
    }

    /// `POST /stop`: anything deployed → Stopping → Stopped.
    pub fn stop(&mut self, now: SystemTime, instant: Instant) {
        self.set_desired(Desired::Stopped, now);
        if matches!(self.status, Status::Stopped | Status::Stopping) {
            return;
        }
        self.set_status(Status::Stopping, now, instant);
        self.plan = VecDeque::from([Status::Stopped]);
    }

    /// `POST /activate?initial=..`: Standby → Initializing → Running|Paused; on a running or
    /// paused pipeline it acts like resume or pause. Returns the body's "from" status.
    pub fn activate(
        &mut self,
        target: Target,
        now: SystemTime,
        instant: Instant,
    ) -> Result<Status, Refusal> {
        let from = self.status;
        match from {
            Status::Stopped => Err(Refusal::InvalidTransition {
                action: "activate",
                status: from,
            }),
            Status::Provisioning | Status::Stopping => Err(Refusal::NotDeployed {
                status: from,
                desired: self.desired,
            }),
            Status::Standby => {
                self.set_desired(Desired::Deployed(target), now);
                self.set_status(Status::Initializing, now, instant);
                self.plan = VecDeque::from([target.status()]);
                Ok(from)
            }
            Status::Initializing => {
                self.set_desired(Desired::Deployed(target), now);
                self.plan = VecDeque::from([target.status()]);
                Ok(from)
            }
            Status::Running | Status::Paused => {
                self.set_desired(Desired::Deployed(target), now);
                if from != target.status() {
                    self.set_status(target.status(), now, instant);
                }
                Ok(from)
            }
        }
    }

    /// `POST /pause` and `POST /resume`: between Running and Paused, at once.
    pub fn pause_or_resume(
        &mut self,
        action: &'static str,
        target: Target,
        now: SystemTime,
        instant: Instant,
    ) -> Result<Status, Refusal> {
        let from = self.status;
        match from {
            Status::Stopped | Status::Provisioning | Status::Stopping => {
                Err(Refusal::NotDeployed {
                    status: from,
                    desired: self.desired,
                })
            }
            Status::Standby => Err(Refusal::InvalidTransition {
                action,
                status: from,
            }),
            Status::Initializing => {
                self.set_desired(Desired::Deployed(target), now);
                self.plan = VecDeque::from([target.status()]);
                Ok(from)
            }
            Status::Running | Status::Paused => {
                self.set_desired(Desired::Deployed(target), now);
                if from != target.status() {
                    self.set_status(target.status(), now, instant);
                }
                Ok(from)
            }
        }
    }

    /// `PUT /v0/pipelines/{name}` on an existing pipeline.
    pub fn update(&mut self, spec: PipelineSpec) {
        self.name = spec.name;
        self.description = spec.description.unwrap_or_default();
        if let Some(config) = spec.runtime_config {
            self.runtime_config = config;
        }
        self.program_code = spec.program_code;
        self.udf_rust = spec.udf_rust.unwrap_or_default();
        self.udf_toml = spec.udf_toml.unwrap_or_default();
        if let Some(config) = spec.program_config {
            self.program_config = config;
        }
        self.version += 1;
        self.refresh_version += 1;
    }

    /// The pipeline as the manager serializes it for `selector`.
    pub fn view(&self, selector: Selector) -> PipelineView<'_> {
        let all = selector == Selector::All;
        PipelineView {
            id: self.id.to_string(),
            name: &self.name,
            description: &self.description,
            tags: [],
            created_at: timestamp(self.created_at),
            version: self.version,
            platform_version: PLATFORM_VERSION,
            runtime_config: all.then_some(&self.runtime_config),
            program_code: all.then_some(self.program_code.as_str()),
            udf_rust: all.then_some(self.udf_rust.as_str()),
            udf_toml: all.then_some(self.udf_toml.as_str()),
            program_config: &self.program_config,
            program_version: 1,
            program_status: "Success",
            program_status_since: timestamp(self.program_status_since),
            program_error: all.then_some(ProgramError {
                sql_compilation: None,
                rust_compilation: None,
                system_error: None,
            }),
            program_info: all.then_some(Value::Null),
            deployment_error: None,
            refresh_version: self.refresh_version,
            storage_status: if self.storage_in_use {
                "InUse"
            } else {
                "Cleared"
            },
            storage_status_details: None,
            deployment_id: self.deployment_id.map(|id| id.to_string()),
            deployment_initial: self.initial.map(|t| t.as_str()),
            deployment_status: self.status.as_str(),
            deployment_status_since: timestamp(self.status_since),
            deployment_desired_status: self.desired.as_str(),
            deployment_desired_status_since: timestamp(self.desired_since),
            deployment_resources_status: self.status.resources(),
            deployment_resources_status_since: timestamp(self.resources_since),
            deployment_resources_desired_status: match self.desired {
                Desired::Stopped => "Stopped",
                Desired::Deployed(_) => "Provisioned",
            },
            deployment_resources_desired_status_since: timestamp(self.desired_since),
            deployment_runtime_status: self.status.runtime(),
            deployment_runtime_status_details: None,
            deployment_runtime_status_since: self.runtime_since.map(timestamp),
            deployment_runtime_desired_status: match self.desired {
                Desired::Deployed(target) if self.status.is_deployed() => Some(target.as_str()),
                _ => None,
            },
            deployment_runtime_desired_status_since: match self.desired {
                Desired::Deployed(_) if self.status.is_deployed() => {
                    Some(timestamp(self.desired_since))
                }
                _ => None,
            },
            bootstrap_policy: None,
            silent_bootstrap: false,
            concurrent_bootstrap: false,
        }
    }
}

/// Every pipeline, by name (list order is by name, as the manager's is for one tenant).
#[derive(Debug, Default)]
pub struct Pipelines {
    by_name: BTreeMap<String, Pipeline>,
}

impl Pipelines {
    pub fn seeded(seed: &[SeedPipeline]) -> Pipelines {
        let (now, instant) = (SystemTime::now(), Instant::now());
        let by_name = seed
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Pipeline::seeded(s.name.clone(), s.status, now, instant),
                )
            })
            .collect();
        Pipelines { by_name }
    }

    /// The pipeline called `name`, brought up to date.
    pub fn get_mut(&mut self, name: &str, delay: Duration) -> Option<&mut Pipeline> {
        let pipeline = self.by_name.get_mut(name)?;
        pipeline.advance(Instant::now(), delay);
        Some(pipeline)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn insert(&mut self, pipeline: Pipeline) {
        self.by_name.insert(pipeline.name.clone(), pipeline);
    }

    pub fn remove(&mut self, name: &str) -> Option<Pipeline> {
        self.by_name.remove(name)
    }

    /// Every pipeline brought up to date.
    pub fn list(&mut self, selector: Selector, delay: Duration) -> Vec<PipelineView<'_>> {
        let now = Instant::now();
        for pipeline in self.by_name.values_mut() {
            pipeline.advance(now, delay);
        }
        self.by_name.values().map(|p| p.view(selector)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(name: &str) -> Pipeline {
        Pipeline::seeded(
            name.into(),
            SeedStatus::Stopped,
            SystemTime::now(),
            Instant::now(),
        )
    }

    #[test]
    fn start_standby_walks_provisioning_then_standby_on_the_clock() {
        let delay = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut p = stopped("p");
        p.start(Target::Standby, SystemTime::now(), t0).unwrap();
        assert_eq!(p.status(), Status::Provisioning);
        p.advance(t0 + delay / 2, delay);
        assert_eq!(p.status(), Status::Provisioning);
        p.advance(t0 + delay, delay);
        assert_eq!(p.status(), Status::Standby);
        assert_eq!(p.desired(), Desired::Deployed(Target::Standby));
    }

    #[test]
    fn activate_walks_initializing_then_target_and_missed_steps_catch_up_at_once() {
        let delay = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut p = Pipeline::seeded("p".into(), SeedStatus::Standby, SystemTime::now(), t0);
        assert_eq!(
            p.activate(Target::Paused, SystemTime::now(), t0),
            Ok(Status::Standby)
        );
        assert_eq!(p.status(), Status::Initializing);
        p.advance(t0 + delay * 5, delay);
        assert_eq!(p.status(), Status::Paused);
    }

    #[test]
    fn status_view_has_the_captured_field_order_and_all_adds_the_program() {
        let p = stopped("orders");
        let text = serde_json::to_string(&p.view(Selector::Status)).unwrap();
        let order = [
            "\"id\"",
            "\"tags\"",
            "\"program_config\"",
            "\"deployment_error\"",
            "\"storage_status\"",
            "\"concurrent_bootstrap\"",
        ];
        let positions: Vec<usize> = order.iter().filter_map(|k| text.find(k)).collect();
        assert_eq!(positions.len(), order.len());
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(!text.contains("\"program_code\""));
        let all = serde_json::to_string(&p.view(Selector::All)).unwrap();
        assert!(all.contains("\"program_code\":\"\""));
        assert!(all.contains("\"program_info\":null"));
    }
}
