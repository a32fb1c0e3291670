//! The stand-in's pipelines: their fields, their lifecycle, and their JSON shape.
//!
//! Owns the registry of pipelines and the rules for moving a pipeline between deployment
//! statuses, program statuses and storage statuses. Every transitional status
//! (`Provisioning`, `Initializing`, `Stopping`; a program `Pending` compilation; storage
//! `Clearing`) lasts `lifecycle_delay`; a pipeline keeps what is still to come and catches up
//! from timestamps whenever it is looked at, so nothing runs in the background and no task
//! polls.
//!
//! The JSON shapes copy the real manager's answers field for field and in the same order
//! (`captured/manager-oss-0.337-more.json`), in three forms: [`ViewKind::Info`] (the answer of
//! a create, `PUT` or `PATCH`: no `bootstrap_*`), [`ViewKind::All`] (`GET`, `selector=all`)
//! and [`ViewKind::Status`] (`selector=status`; `status_with_connectors` adds
//! `connectors: {"num_errors": 0}` while a pipeline process runs). `runtime_config` and
//! `program_config` keep the manager's key order: a client's object is laid over the captured
//! defaults key by key (top-level keys the manager does not know are dropped; values are not
//! validated).
//!
//! Programs: a new or changed program is `Pending` for one `lifecycle_delay`, then `Success`
//! ([`Compiler::Succeeds`]) or `SystemError` with the captured message ([`Compiler::Absent`],
//! a manager without its SQL compiler, like the captured one); the end of a compilation
//! bumps `refresh_version`. A start while a program is pending is accepted at once (the
//! manager's "early start" is not modelled); a start of a failed program is refused with
//! `CannotStartWithCompilationError`. Seeded pipelines are compiled already.
//!
//! Versions: a change of `name`, `runtime_config` or a program field bumps `version` and
//! `refresh_version`; a program field also bumps `program_version` and recompiles.
//! `description` and `tags` are client metadata and bump nothing (as captured).
//!
//! Storage: `Cleared` until the first deployment, then `InUse`; `/clear` on a fully stopped
//! pipeline makes it `Clearing` then `Cleared`; deleting needs it `Cleared`.
//!
//! Deliberately not modelled: bootstrapping/approval, suspend (a non-forced stop stops),
//! deployment errors, connectors and statistics, the `Compiling*` intermediate program
//! statuses, the edits the manager restricts while storage is in use.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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
    pub fn resources(self) -> &'static str {
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

    /// `deployment_resources_desired_status` for this desired status.
    pub fn resources(self) -> &'static str {
        match self {
            Desired::Stopped => "Stopped",
            Desired::Deployed(_) => "Provisioned",
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

/// Which of the manager's pipeline shapes to serialize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    /// `PipelineInfo`: the answer of a create, `PUT` or `PATCH`.
    Info,
    /// `PipelineSelectedInfo` with `selector=all`.
    All,
    /// `PipelineSelectedInfo` with `selector=status`.
    Status,
    /// `selector=status_with_connectors`.
    StatusWithConnectors,
}

impl From<Selector> for ViewKind {
    fn from(selector: Selector) -> ViewKind {
        match selector {
            Selector::All => ViewKind::All,
            Selector::Status => ViewKind::Status,
            Selector::StatusWithConnectors => ViewKind::StatusWithConnectors,
        }
    }
}

/// What compiling a program ends in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compiler {
    /// Every program compiles (`program_status: Success`).
    #[default]
    Succeeds,
    /// No SQL compiler, like the captured manager: every program ends in `SystemError`.
    Absent,
}

/// `system_error` of a program compiled by a manager without its SQL compiler (as captured,
/// with the compiler's path elided).
pub const NO_COMPILER_ERROR: &str = "SQL compiler process returned with exit status code (1) and stderr which cannot be deserialized due to expected value at line 1 column 1:\nError: Invalid or corrupt jarfile <sql-compiler-path>/sql2dbsp-jar-with-dependencies.jar\n";

/// `program_status` (`ProgramStatus`), the subset the stand-in moves through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramStatus {
    Pending,
    Success,
    SystemError,
}

impl ProgramStatus {
    fn as_str(self) -> &'static str {
        match self {
            ProgramStatus::Pending => "Pending",
            ProgramStatus::Success => "Success",
            ProgramStatus::SystemError => "SystemError",
        }
    }
}

/// `storage_status` (`StorageStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageStatus {
    Cleared,
    InUse,
    Clearing,
}

impl StorageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageStatus::Cleared => "Cleared",
            StorageStatus::InUse => "InUse",
            StorageStatus::Clearing => "Clearing",
        }
    }
}

/// Client metadata of a `POST`/`PUT` body (`ClientMetadata`, flattened into the body):
/// missing keys take their default.
#[derive(Debug, Default, Deserialize)]
pub struct ClientMetadata {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// The body of `POST /v0/pipelines` and `PUT /v0/pipelines/{name}`. Named and shaped like
/// the manager's `PostPutPipelineInternal` (the flattened metadata makes serde read it as a
/// map, so a JSON array fails with the manager's exact message); unknown keys are ignored.
#[derive(Debug, Deserialize)]
#[serde(expecting = "struct PostPutPipelineInternal")]
pub struct PipelineSpec {
    #[serde(flatten)]
    pub metadata: ClientMetadata,
    pub name: String,
    pub runtime_config: Option<Value>,
    pub program_code: String,
    pub udf_rust: Option<String>,
    pub udf_toml: Option<String>,
    pub program_config: Option<Value>,
    #[serde(flatten)]
    pub _unknown: BTreeMap<String, IgnoredAny>,
}

impl PipelineSpec {
    /// A spec with only a name (seeded pipelines).
    fn named(name: String) -> PipelineSpec {
        PipelineSpec {
            metadata: ClientMetadata::default(),
            name,
            runtime_config: None,
            program_code: String::new(),
            udf_rust: None,
            udf_toml: None,
            program_config: None,
            _unknown: BTreeMap::new(),
        }
    }
}

/// The body of `PATCH /v0/pipelines/{name}` (`PatchPipelineInternal`): every field optional,
/// an absent one unchanged.
#[derive(Debug, Deserialize)]
#[serde(expecting = "struct PatchPipelineInternal")]
pub struct PipelinePatch {
    #[serde(flatten)]
    pub metadata: ClientMetadata,
    pub name: Option<String>,
    pub runtime_config: Option<Value>,
    pub program_code: Option<String>,
    pub udf_rust: Option<String>,
    pub udf_toml: Option<String>,
    pub program_config: Option<Value>,
    #[serde(flatten)]
    pub _unknown: BTreeMap<String, IgnoredAny>,
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
    /// A deployed pipeline asked to start with another `initial` (400
    /// `InitialImmutableUnlessStopped`).
    InitialImmutable,
    /// The program failed to compile (400 `CannotStartWithCompilationError`).
    CompilationError,
    /// Storage is being cleared (400 `CannotStartWhileClearingStorage`).
    ClearingStorage,
    /// Storage can change only while fully stopped (400 `StorageStatusImmutableUnlessStopped`).
    StorageImmutable {
        status: Status,
        desired: Desired,
        storage: StorageStatus,
    },
}

/// The program's compilation.
#[derive(Debug)]
struct Program {
    version: u64,
    status: ProgramStatus,
    since: SystemTime,
    /// When the current compilation began (monotonic clock), while `Pending`.
    started: Instant,
    outcome: ProgramStatus,
}

/// One pipeline.
#[derive(Debug)]
pub struct Pipeline {
    id: Uuid,
    name: String,
    description: String,
    tags: Vec<String>,
    created_at: SystemTime,
    version: u64,
    runtime_config: Box<RawValue>,
    program_code: String,
    udf_rust: String,
    udf_toml: String,
    program_config: Box<RawValue>,
    program: Program,
    refresh_version: u64,
    storage: StorageStatus,
    /// When storage clearing began (monotonic clock), while `Clearing`.
    storage_step: Instant,
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
/// `serde_json::Value`, whose map would sort the keys). Fields a [`ViewKind`] leaves out are
/// `None` and skipped; `Some(None)` is a JSON `null`.
#[derive(Serialize)]
pub struct PipelineView<'a> {
    id: String,
    name: &'a str,
    description: &'a str,
    tags: &'a [String],
    created_at: String,
    version: u64,
    platform_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime_config: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    program_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udf_rust: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udf_toml: Option<&'a str>,
    program_config: &'a RawValue,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_resources_status_details: Option<Option<Value>>,
    deployment_resources_status_since: String,
    deployment_resources_desired_status: &'static str,
    deployment_resources_desired_status_since: String,
    deployment_runtime_status: Option<&'static str>,
    deployment_runtime_status_details: Option<Value>,
    deployment_runtime_status_since: Option<String>,
    deployment_runtime_desired_status: Option<&'static str>,
    deployment_runtime_desired_status_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_policy: Option<Option<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    silent_bootstrap: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrent_bootstrap: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connectors: Option<Value>,
}

/// `program_error` (`ProgramError`).
#[derive(Serialize)]
struct ProgramError {
    sql_compilation: Option<Value>,
    rust_compilation: Option<Value>,
    system_error: Option<&'static str>,
}

/// Formats a timestamp the way the manager does: RFC 3339, microseconds, `Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// The manager's `RuntimeConfig` defaults, in its field order (as captured).
const RUNTIME_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("workers", "8"),
    ("max_rss_mb", "null"),
    ("datafusion_memory_mb", "null"),
    ("hosts", "1"),
    (
        "storage",
        r#"{"backend":{"name":"default"},"min_storage_bytes":null,"min_step_storage_bytes":null,"compression":"default","cache_mib":null}"#,
    ),
    (
        "fault_tolerance",
        r#"{"model":"none","checkpoint_interval_secs":60}"#,
    ),
    ("cpu_profiler", "true"),
    ("tracing", "false"),
    ("tracing_endpoint_jaeger", r#""127.0.0.1:6831""#),
    ("min_batch_size_records", "0"),
    ("max_buffering_delay_usecs", "0"),
    (
        "resources",
        r#"{"cpu_cores_min":null,"cpu_cores_max":null,"memory_mb_min":null,"memory_mb_max":null,"storage_mb_max":null,"storage_class":null,"service_account_name":null,"namespace":null}"#,
    ),
    ("clock_resolution_usecs", "1000000"),
    ("clock_timezone_offset", "null"),
    ("pin_cpus", "[]"),
    ("provisioning_timeout_secs", "null"),
    ("max_parallel_connector_init", "null"),
    ("init_containers", "null"),
    ("checkpoint_during_suspend", "true"),
    ("http_workers", "null"),
    ("io_workers", "null"),
    ("env", "{}"),
    ("dev_tweaks", "{}"),
    ("logging", "null"),
    ("pipeline_template_configmap", "null"),
];

/// The manager's `ProgramConfig` defaults, in its field order.
const PROGRAM_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("profile", "null"),
    ("cache", "true"),
    ("runtime_version", "null"),
    ("use_platform_compiler", "false"),
];

/// `given` (a client's object) laid over `defaults` key by key, in the defaults' order.
fn ordered_config(defaults: &[(&str, &str)], given: Option<&Value>) -> Box<RawValue> {
    let given = given.and_then(Value::as_object);
    let mut text = String::from("{");
    for (index, (key, default)) in defaults.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push('"');
        text.push_str(key);
        text.push_str("\":");
        match given.and_then(|object| object.get(*key)) {
            Some(value) => text.push_str(&value.to_string()),
            None => text.push_str(default),
        }
    }
    text.push('}');
    // The text is built from valid JSON pieces, so the fallback is never used.
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn runtime_config(given: Option<&Value>) -> Box<RawValue> {
    ordered_config(RUNTIME_CONFIG_DEFAULTS, given)
}

fn program_config(given: Option<&Value>) -> Box<RawValue> {
    ordered_config(PROGRAM_CONFIG_DEFAULTS, given)
}

impl Compiler {
    fn outcome(self) -> ProgramStatus {
        match self {
            Compiler::Succeeds => ProgramStatus::Success,
            Compiler::Absent => ProgramStatus::SystemError,
        }
    }
}

impl Pipeline {
    /// A stopped pipeline whose program has just been submitted (`Pending`).
    pub fn new(
        spec: PipelineSpec,
        compiler: Compiler,
        now: SystemTime,
        instant: Instant,
    ) -> Pipeline {
        Pipeline {
            id: Uuid::now_v7(),
            name: spec.name,
            description: spec.metadata.description.unwrap_or_default(),
            tags: spec.metadata.tags.unwrap_or_default(),
            created_at: now,
            version: 1,
            runtime_config: runtime_config(spec.runtime_config.as_ref()),
            program_code: spec.program_code,
            udf_rust: spec.udf_rust.unwrap_or_default(),
            udf_toml: spec.udf_toml.unwrap_or_default(),
            program_config: program_config(spec.program_config.as_ref()),
            program: Program {
                version: 1,
                status: ProgramStatus::Pending,
                since: now,
                started: instant,
                outcome: compiler.outcome(),
            },
            refresh_version: 1,
            storage: StorageStatus::Cleared,
            storage_step: instant,
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

    /// A compiled pipeline already in `seed`'s status, as if it had been started long ago.
    pub fn seeded(
        name: String,
        seed: SeedStatus,
        compiler: Compiler,
        now: SystemTime,
        instant: Instant,
    ) -> Pipeline {
        let mut pipeline = Pipeline::new(PipelineSpec::named(name), compiler, now, instant);
        pipeline.program.status = pipeline.program.outcome;
        pipeline.refresh_version += 1;
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

    pub fn storage(&self) -> StorageStatus {
        self.storage
    }

    /// Whether both the status and the desired status are `Stopped`.
    pub fn fully_stopped(&self) -> bool {
        self.status == Status::Stopped && self.desired == Desired::Stopped
    }

    /// Catches up on everything due: deployment steps, the end of a compilation, the end of
    /// storage clearing; each stamped with the time it was due rather than noticed.
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
        if self.program.status == ProgramStatus::Pending && now >= self.program.started + delay {
            self.program.status = self.program.outcome;
            self.program.since += delay;
            self.refresh_version += 1;
        }
        if self.storage == StorageStatus::Clearing && now >= self.storage_step + delay {
            self.storage = StorageStatus::Cleared;
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
        self.deployment_id = Some(Uuid::now_v7());
        self.initial = Some(target);
        self.storage = StorageStatus::InUse;
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
        if self.program.status == ProgramStatus::SystemError {
            return Err(Refusal::CompilationError);
        }
        if self.storage == StorageStatus::Clearing {
            return Err(Refusal::ClearingStorage);
        }
        match self.status {
            Status::Stopped => {
                self.deploy(target, now, instant);
                Ok(())
            }
            Status::Stopping => Err(Refusal::IllegalAction {
                status: self.status,
                desired: self.desired,
                requested: Desired::Deployed(target),
                hint: "Cannot restart the pipeline while it is stopping. Wait for it to stop before starting a new instance of the pipeline.",
            }),
            // Already (being) started with the same `initial`: a success that changes nothing.
            _ if self.initial == Some(target) => Ok(()),
            _ => Err(Refusal::InitialImmutable),
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

    /// `POST /clear`: a fully stopped pipeline's storage becomes `Clearing`, then `Cleared`;
    /// already cleared (or clearing) is a no-op.
    pub fn clear(&mut self, instant: Instant) -> Result<(), Refusal> {
        if self.storage != StorageStatus::InUse {
            return Ok(());
        }
        if !self.fully_stopped() {
            return Err(Refusal::StorageImmutable {
                status: self.status,
                desired: self.desired,
                storage: self.storage,
            });
        }
        self.storage = StorageStatus::Clearing;
        self.storage_step = instant;
        Ok(())
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

    /// `PUT` on an existing pipeline: every field replaced (an absent optional one by its
    /// empty value).
    pub fn replace(&mut self, spec: PipelineSpec, now: SystemTime, instant: Instant) {
        self.apply(
            PipelinePatch {
                metadata: ClientMetadata {
                    description: Some(spec.metadata.description.unwrap_or_default()),
                    tags: Some(spec.metadata.tags.unwrap_or_default()),
                },
                name: Some(spec.name),
                runtime_config: Some(spec.runtime_config.unwrap_or(Value::Null)),
                program_code: Some(spec.program_code),
                udf_rust: Some(spec.udf_rust.unwrap_or_default()),
                udf_toml: Some(spec.udf_toml.unwrap_or_default()),
                program_config: Some(spec.program_config.unwrap_or(Value::Null)),
                _unknown: BTreeMap::new(),
            },
            now,
            instant,
        );
    }

    /// `PATCH` (and the body of [`Pipeline::replace`]): the given fields replace the current
    /// ones; versions move as the module doc says.
    pub fn apply(&mut self, patch: PipelinePatch, now: SystemTime, instant: Instant) {
        if let Some(description) = patch.metadata.description {
            self.description = description;
        }
        if let Some(tags) = patch.metadata.tags {
            self.tags = tags;
        }
        let mut core_changed = false;
        let mut program_changed = false;
        if let Some(name) = patch.name.filter(|n| *n != self.name) {
            self.name = name;
            core_changed = true;
        }
        if let Some(config) = patch.runtime_config {
            let config = runtime_config(Some(&config));
            if config.get() != self.runtime_config.get() {
                self.runtime_config = config;
                core_changed = true;
            }
        }
        let mut set = |field: &mut String, value: Option<String>| {
            if let Some(value) = value.filter(|v| v != field) {
                *field = value;
                program_changed = true;
            }
        };
        set(&mut self.program_code, patch.program_code);
        set(&mut self.udf_rust, patch.udf_rust);
        set(&mut self.udf_toml, patch.udf_toml);
        if let Some(config) = patch.program_config {
            let config = program_config(Some(&config));
            if config.get() != self.program_config.get() {
                self.program_config = config;
                program_changed = true;
            }
        }
        if core_changed || program_changed {
            self.version += 1;
            self.refresh_version += 1;
        }
        if program_changed {
            self.program.version += 1;
            self.program.status = ProgramStatus::Pending;
            self.program.since = now;
            self.program.started = instant;
        }
    }

    /// The pipeline as the manager serializes it in the shape `kind`.
    pub fn view(&self, kind: ViewKind) -> PipelineView<'_> {
        let full = matches!(kind, ViewKind::Info | ViewKind::All);
        let selected = kind != ViewKind::Info;
        let runs = matches!(self.status, Status::Running | Status::Paused);
        PipelineView {
            id: self.id.to_string(),
            name: &self.name,
            description: &self.description,
            tags: &self.tags,
            created_at: timestamp(self.created_at),
            version: self.version,
            platform_version: PLATFORM_VERSION,
            runtime_config: full.then_some(&*self.runtime_config),
            program_code: full.then_some(self.program_code.as_str()),
            udf_rust: full.then_some(self.udf_rust.as_str()),
            udf_toml: full.then_some(self.udf_toml.as_str()),
            program_config: &self.program_config,
            program_version: self.program.version,
            program_status: self.program.status.as_str(),
            program_status_since: timestamp(self.program.since),
            program_error: full.then_some(ProgramError {
                sql_compilation: None,
                rust_compilation: None,
                system_error: (self.program.status == ProgramStatus::SystemError)
                    .then_some(NO_COMPILER_ERROR),
            }),
            program_info: full.then_some(Value::Null),
            deployment_error: None,
            refresh_version: self.refresh_version,
            storage_status: self.storage.as_str(),
            storage_status_details: None,
            deployment_id: self.deployment_id.map(|id| id.to_string()),
            deployment_initial: self.initial.map(|t| t.as_str()),
            deployment_status: self.status.as_str(),
            deployment_status_since: timestamp(self.status_since),
            deployment_desired_status: self.desired.as_str(),
            deployment_desired_status_since: timestamp(self.desired_since),
            deployment_resources_status: self.status.resources(),
            deployment_resources_status_details: full.then_some(None),
            deployment_resources_status_since: timestamp(self.resources_since),
            deployment_resources_desired_status: self.desired.resources(),
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
            bootstrap_policy: selected.then_some(None),
            silent_bootstrap: selected.then_some(false),
            concurrent_bootstrap: selected.then_some(false),
            connectors: (kind == ViewKind::StatusWithConnectors && runs)
                .then(|| json!({"num_errors": 0})),
        }
    }
}

/// `role` of an API key (`MintableKeyRole`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Read,
    Write,
    /// Not mintable as an API key (the stand-in refuses it).
    Admin,
    /// Not mintable as an API key (the stand-in refuses it).
    Owner,
}

/// An API key as listed (`ApiKeyDescr`); the secret itself is shown once and not kept.
#[derive(Clone, Debug, Serialize)]
pub struct ApiKeyDescr {
    #[serde(serialize_with = "serialize_uuid")]
    pub id: Uuid,
    pub name: String,
    pub role: KeyRole,
}

fn serialize_uuid<S: serde::Serializer>(id: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

/// The tenant's API keys, by name. Keys created here are listed but do not authenticate:
/// only `StandinOptions::require_api_key` does.
#[derive(Debug, Default)]
pub struct ApiKeys {
    by_name: BTreeMap<String, ApiKeyDescr>,
}

impl ApiKeys {
    /// Adds a key called `name`; `None` if the name is taken. Returns the secret, made of
    /// `apikey:` and 128 random ASCII alphanumerics like the manager's.
    pub fn create(&mut self, name: &str, role: KeyRole) -> Option<(ApiKeyDescr, String)> {
        if self.by_name.contains_key(name) {
            return None;
        }
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let secret: String = (0..8)
            .flat_map(|_| *Uuid::new_v4().as_bytes())
            .map(|byte| char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]))
            .collect();
        let descr = ApiKeyDescr {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            role,
        };
        self.by_name.insert(name.to_owned(), descr.clone());
        Some((descr, format!("apikey:{secret}")))
    }

    pub fn get(&self, name: &str) -> Option<&ApiKeyDescr> {
        self.by_name.get(name)
    }

    pub fn list(&self) -> Vec<&ApiKeyDescr> {
        self.by_name.values().collect()
    }

    pub fn remove(&mut self, name: &str) -> Option<ApiKeyDescr> {
        self.by_name.remove(name)
    }
}

/// Every pipeline, by name (list order is by name, as the manager's is for one tenant).
#[derive(Debug, Default)]
pub struct Pipelines {
    by_name: BTreeMap<String, Pipeline>,
}

impl Pipelines {
    pub fn seeded(seed: &[SeedPipeline], compiler: Compiler) -> Pipelines {
        let (now, instant) = (SystemTime::now(), Instant::now());
        let by_name = seed
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Pipeline::seeded(s.name.clone(), s.status, compiler, now, instant),
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
    pub fn list(&mut self, kind: ViewKind, delay: Duration) -> Vec<PipelineView<'_>> {
        let now = Instant::now();
        for pipeline in self.by_name.values_mut() {
            pipeline.advance(now, delay);
        }
        self.by_name.values().map(|p| p.view(kind)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(name: &str) -> Pipeline {
        Pipeline::seeded(
            name.into(),
            SeedStatus::Stopped,
            Compiler::Succeeds,
            SystemTime::now(),
            Instant::now(),
        )
    }

    fn spec(json: Value) -> PipelineSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn start_standby_walks_provisioning_then_standby_on_the_clock() {
        let delay = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut p = stopped("p");
        p.start(Target::Standby, SystemTime::now(), t0).unwrap();
        assert_eq!(p.status(), Status::Provisioning);
        assert_eq!(p.storage(), StorageStatus::InUse);
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
        let mut p = Pipeline::seeded(
            "p".into(),
            SeedStatus::Standby,
            Compiler::Succeeds,
            SystemTime::now(),
            t0,
        );
        assert_eq!(
            p.activate(Target::Paused, SystemTime::now(), t0),
            Ok(Status::Standby)
        );
        assert_eq!(p.status(), Status::Initializing);
        p.advance(t0 + delay * 5, delay);
        assert_eq!(p.status(), Status::Paused);
    }

    #[test]
    fn a_new_program_is_pending_for_one_delay_then_compiles_and_bumps_refresh_version() {
        let delay = Duration::from_millis(100);
        let t0 = Instant::now();
        for (compiler, outcome) in [
            (Compiler::Succeeds, "Success"),
            (Compiler::Absent, "SystemError"),
        ] {
            let mut p = Pipeline::new(
                spec(json!({"name": "p", "program_code": ""})),
                compiler,
                SystemTime::now(),
                t0,
            );
            let view = serde_json::to_value(p.view(ViewKind::Info)).unwrap();
            assert_eq!(view["program_status"], "Pending");
            assert_eq!(view["refresh_version"], 1);
            p.advance(t0 + delay, delay);
            let view = serde_json::to_value(p.view(ViewKind::All)).unwrap();
            assert_eq!(view["program_status"], outcome);
            assert_eq!(view["refresh_version"], 2);
            assert_eq!(
                view["program_error"]["system_error"].is_string(),
                compiler == Compiler::Absent
            );
            let started = p.start(Target::Running, SystemTime::now(), t0 + delay);
            assert_eq!(started.is_err(), compiler == Compiler::Absent);
        }
    }

    #[test]
    fn metadata_edits_bump_nothing_but_program_edits_bump_every_version() {
        let t0 = Instant::now();
        let mut p = stopped("p");
        let patch = |json: Value| -> PipelinePatch { serde_json::from_value(json).unwrap() };
        p.apply(
            patch(json!({"description": "d", "tags": ["x"]})),
            SystemTime::now(),
            t0,
        );
        let view = serde_json::to_value(p.view(ViewKind::Info)).unwrap();
        assert_eq!(
            (view["version"].as_u64(), view["refresh_version"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(view["tags"], json!(["x"]));
        p.apply(
            patch(json!({"program_code": "SELECT 1"})),
            SystemTime::now(),
            t0,
        );
        let view = serde_json::to_value(p.view(ViewKind::Info)).unwrap();
        assert_eq!(view["version"], 2);
        assert_eq!(view["refresh_version"], 3);
        assert_eq!(view["program_version"], 2);
        assert_eq!(view["program_status"], "Pending");
    }

    #[test]
    fn storage_clears_only_when_fully_stopped() {
        let delay = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut p = Pipeline::seeded(
            "p".into(),
            SeedStatus::Running,
            Compiler::Succeeds,
            SystemTime::now(),
            t0,
        );
        assert!(matches!(p.clear(t0), Err(Refusal::StorageImmutable { .. })));
        p.stop(SystemTime::now(), t0);
        p.advance(t0 + delay, delay);
        assert_eq!(p.storage(), StorageStatus::InUse);
        p.clear(t0 + delay).unwrap();
        assert_eq!(p.storage(), StorageStatus::Clearing);
        assert_eq!(
            p.start(Target::Running, SystemTime::now(), t0 + delay),
            Err(Refusal::ClearingStorage)
        );
        p.advance(t0 + delay * 2, delay);
        assert_eq!(p.storage(), StorageStatus::Cleared);
        assert_eq!(p.clear(t0), Ok(()), "clearing cleared storage is a no-op");
    }

    #[test]
    fn runtime_config_keeps_the_manager_order_and_lays_a_client_object_over_the_defaults() {
        let defaults = runtime_config(None);
        assert!(defaults.get().starts_with(r#"{"workers":8,"max_rss_mb":null,"datafusion_memory_mb":null,"hosts":1,"storage":{"backend""#));
        let given = runtime_config(Some(&json!({"workers": 2, "unknown": true})));
        assert!(given.get().starts_with(r#"{"workers":2,"max_rss_mb":null"#));
        assert!(!given.get().contains("unknown"));
        assert_eq!(
            program_config(None).get(),
            r#"{"profile":null,"cache":true,"runtime_version":null,"use_platform_compiler":false}"#
        );
    }

    #[test]
    fn the_three_shapes_have_the_captured_fields_in_the_captured_order() {
        let p = stopped("orders");
        let keys = |kind| -> Vec<String> {
            let text = serde_json::to_string(&p.view(kind)).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            keys.sort_by_key(|k| text.find(&format!("\"{k}\":")).unwrap());
            keys
        };
        let info = keys(ViewKind::Info);
        let all = keys(ViewKind::All);
        let status = keys(ViewKind::Status);
        assert_eq!((info.len(), all.len(), status.len()), (37, 40, 33));
        assert_eq!(&all[..37], &info[..]);
        assert_eq!(
            &all[37..],
            [
                "bootstrap_policy",
                "silent_bootstrap",
                "concurrent_bootstrap"
            ]
        );
        assert!(!status.contains(&"program_code".to_owned()));
        assert!(!status.contains(&"deployment_resources_status_details".to_owned()));
        assert_eq!(
            keys(ViewKind::StatusWithConnectors),
            status,
            "no process, no connectors"
        );
    }
}
