//! `meshwork analyze`: Istio's configuration analyzers. Each analyzer is a pure function
//! over the loaded configuration (the resources with where they were read, the mesh
//! config and the loader's findings) that reports messages with Istio's codes, names and
//! levels (`Error [IST0101] (VirtualService default/reviews) Referenced host not found:
//! "reviewz"`).
//!
//! The harness matches `istioctl analyze`: the Istio namespace is the mesh's root
//! namespace (`istio-system`), and unless the mesh config sets `ingressControllerMode:
//! OFF`, istioctl's default ingress gateway is assumed: a Pod labelled `istio:
//! ingressgateway`, and its Service (ports 80, 443, 31400, 15443) unless the input
//! defines that Service.

mod annotations;
mod authz;
mod context;
mod deployment;
mod deprecation;
mod destination_rule;
mod gateway;
mod injection;
mod jwt_claim_route;
mod messages;
mod schema;
mod service;
mod service_entry;
mod sidecar;
mod telemetry;
mod virtual_service;

use std::fmt;

use serde::Serialize;

pub use context::Context;
pub use messages::{ALL_MESSAGES, MessageType};

use crate::diagnostic::Location;
use crate::load::{LoadOutcome, LoadedObject};
use crate::resource::ObjectRef;

/// How serious a message is, in Istio's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    /// Worth knowing.
    Info,
    /// Probably not what was meant.
    Warning,
    /// The configuration will not work as written.
    Error,
}

impl Level {
    /// The level's name as istioctl prints it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }

    /// Reads `Info`, `Warning` or `Error` (any case).
    pub fn parse(text: &str) -> Option<Level> {
        [Level::Info, Level::Warning, Level::Error]
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One finding of an analyzer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The code, name and level.
    pub kind: &'static MessageType,
    /// The resource it is about (none for input that never became a resource).
    pub origin: Option<ObjectRef>,
    /// Where that resource was read.
    pub location: Option<Location>,
    /// The message text.
    pub text: String,
}

impl Message {
    /// The level of the message.
    pub fn level(&self) -> Level {
        self.kind.level
    }

    /// `Kind namespace/name`, or `Kind name` for cluster-scoped resources.
    pub fn origin_text(&self) -> String {
        self.origin
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// The resource as istioctl names it: `Kind name.namespace`, or `Kind name`.
    pub fn friendly_name(&self) -> String {
        self.origin
            .as_ref()
            .map(|o| match o.namespace.as_str() {
                "" => format!("{} {}", o.kind, o.name),
                ns => format!("{} {}.{ns}", o.kind, o.name),
            })
            .unwrap_or_default()
    }

    /// `file:line` where the resource was read, when known.
    pub fn reference(&self) -> Option<String> {
        let l = self.location.as_ref()?;
        if l.file.as_os_str().is_empty() {
            return None;
        }
        Some(if l.line > 0 {
            format!("{}:{}", l.file.display(), l.line)
        } else {
            l.file.display().to_string()
        })
    }

    /// The page of Istio's reference that explains the code.
    pub fn documentation_url(&self) -> String {
        self.kind.documentation_url()
    }

    /// The namespace of the resource the message is about; empty when it has none.
    pub fn namespace(&self) -> &str {
        self.origin.as_ref().map_or("", |o| o.namespace.as_str())
    }
}

impl fmt::Display for Message {
    /// The log format of istioctl: `Error [IST0101] (VirtualService default/reviews
    /// reviews.yaml:12) Referenced host not found: "reviewz"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] ", self.kind.level, self.kind.code)?;
        let place: Vec<String> = self
            .origin
            .iter()
            .map(ToString::to_string)
            .chain(self.reference())
            .collect();
        if !place.is_empty() {
            write!(f, "({}) ", place.join(" "))?;
        }
        f.write_str(&self.text)
    }
}

/// One analyzer: a name as istioctl lists it, what it checks, the codes it can emit and
/// the function that runs it.
pub struct Analyzer {
    /// `virtualservice.GatewayAnalyzer` and the like: Istio's names.
    pub name: &'static str,
    /// What it checks.
    pub description: &'static str,
    /// Every message it can report.
    pub codes: &'static [&'static MessageType],
    /// The check.
    pub run: fn(&Context<'_>, &mut Report),
}

/// Collects the messages of one analyzer.
pub struct Report {
    allowed: &'static [&'static MessageType],
    messages: Vec<Message>,
}

impl Report {
    /// Reports a message about a loaded resource.
    pub fn push(&mut self, kind: &'static MessageType, at: &LoadedObject, text: String) {
        self.push_at(
            kind,
            Some(at.object.object_ref()),
            Some(at.origin.clone()),
            text,
        );
    }

    /// Reports a message with an explicit origin and location.
    pub fn push_at(
        &mut self,
        kind: &'static MessageType,
        origin: Option<ObjectRef>,
        location: Option<Location>,
        text: String,
    ) {
        assert!(
            self.allowed.iter().any(|a| a.code == kind.code),
            "{} reported by an analyzer that does not declare it",
            kind.code
        );
        self.messages.push(Message {
            kind,
            origin,
            location,
            text,
        });
    }
}

/// Every analyzer, sorted by name.
pub const ANALYZERS: &[Analyzer] = &[
    annotations::K8S,
    deployment::APPLICATION_UID,
    authz::AUTHORIZATION_POLICIES,
    destination_rule::MTLS_CONFLICT,
    deprecation::FIELDS,
    destination_rule::CA_CERTIFICATE,
    gateway::CERTIFICATE,
    gateway::CONFLICTING,
    gateway::INGRESS_PORT,
    gateway::SECRET,
    injection::INJECTION,
    schema::VALIDATION,
    service::PORT_NAME,
    service_entry::PROTOCOL_ADDRESSES,
    sidecar::DEFAULT_SELECTOR,
    sidecar::SELECTOR,
    telemetry::DEFAULT_SELECTOR,
    telemetry::PROVIDER,
    telemetry::SELECTOR,
    virtual_service::CONFLICTING_MESH_GATEWAY_HOSTS,
    virtual_service::DESTINATION_HOST,
    virtual_service::DESTINATION_RULE,
    virtual_service::GATEWAY,
    jwt_claim_route::JWT_CLAIM_ROUTE,
];

/// Runs every analyzer over a load's result. Messages a resource suppresses with the
/// `galley.istio.io/analyze-suppress` annotation are dropped; the rest are sorted (by
/// level, code, resource and text) and duplicates removed, as istioctl does.
pub fn analyze(outcome: &LoadOutcome) -> Vec<Message> {
    let ctx = Context::new(outcome);
    let mut out = Vec::new();
    for a in ANALYZERS {
        out.extend(run_one(a, &ctx));
    }
    out.retain(|m| !suppressed(&ctx, m));
    // istioctl's order: errors first, then by code, then messages about no resource, then
    // by resource (as istioctl names it), then by the whole line.
    out.sort_by_cached_key(|m| {
        (
            std::cmp::Reverse(m.level()),
            m.kind.code,
            m.origin.is_some(),
            m.friendly_name(),
            m.to_string(),
        )
    });
    out.dedup();
    out
}

/// The annotation by which a resource silences messages about itself: a comma-separated
/// list of codes, or `*` for all.
pub const SUPPRESS_ANNOTATION: &str = "galley.istio.io/analyze-suppress";

fn suppressed(ctx: &Context<'_>, m: &Message) -> bool {
    let Some(origin) = &m.origin else {
        return false;
    };
    let object = ctx
        .objects
        .iter()
        .find(|o| &o.object.object_ref() == origin);
    let codes = object
        .and_then(|o| o.object.metadata().annotations.as_ref())
        .and_then(|a| a.get(SUPPRESS_ANNOTATION));
    codes.is_some_and(|c| {
        c.split(',')
            .any(|c| c.trim() == "*" || c.trim() == m.kind.code)
    })
}

/// Runs one analyzer.
pub fn run_one(a: &Analyzer, ctx: &Context<'_>) -> Vec<Message> {
    let mut report = Report {
        allowed: a.codes,
        messages: Vec::new(),
    };
    (a.run)(ctx, &mut report);
    report.messages
}
