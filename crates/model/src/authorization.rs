//! AuthorizationPolicies for one workload (a gateway today): the policies of the root
//! namespace without a selector (mesh-wide), those of the root namespace whose selector
//! matches the workload, and those of the workload's namespace without a selector or with
//! one that matches. Values become patterns and condition keys an enum.

use std::collections::BTreeMap;

use meshwork_api::generated::security::{AuthorizationAction, Condition, Operation, Source};
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::Object;
use meshwork_resources::authorization::{
    AuthorizationPolicy, AuthzAction, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource,
    ConditionKey, Field, Pattern,
};

fn patterns(values: &[String]) -> Vec<Pattern> {
    values.iter().map(|v| Pattern::parse(v)).collect()
}

fn field(values: &[String], not_values: &[String]) -> Field<Pattern> {
    Field {
        values: patterns(values),
        not_values: patterns(not_values),
    }
}

fn strings(values: &[String], not_values: &[String]) -> Field<String> {
    Field {
        values: values.to_vec(),
        not_values: not_values.to_vec(),
    }
}

/// `serviceAccounts` (`ns/sa`) and `trustDomains` as principal patterns.
fn principals(s: &Source) -> Field<Pattern> {
    let mut f = field(&s.principals, &s.not_principals);
    let account = |sa: &String| match sa.split_once('/') {
        Some((ns, name)) => Pattern::Suffix(format!("/ns/{ns}/sa/{name}")),
        None => Pattern::Suffix(format!("/sa/{sa}")),
    };
    f.values.extend(s.service_accounts.iter().map(account));
    f.not_values
        .extend(s.not_service_accounts.iter().map(account));
    let domain = |td: &String| Pattern::Prefix(format!("{td}/"));
    f.values.extend(s.trust_domains.iter().map(domain));
    f.not_values.extend(s.not_trust_domains.iter().map(domain));
    f
}

fn source(s: &Source) -> AuthzSource {
    AuthzSource {
        principals: principals(s),
        request_principals: field(&s.request_principals, &s.not_request_principals),
        namespaces: field(&s.namespaces, &s.not_namespaces),
        ip_blocks: strings(&s.ip_blocks, &s.not_ip_blocks),
        remote_ip_blocks: strings(&s.remote_ip_blocks, &s.not_remote_ip_blocks),
    }
}

fn operation(o: &Operation) -> AuthzOperation {
    let ports = |v: &[String]| v.iter().filter_map(|p| p.parse().ok()).collect();
    AuthzOperation {
        hosts: field(&o.hosts, &o.not_hosts),
        ports: Field {
            values: ports(&o.ports),
            not_values: ports(&o.not_ports),
        },
        methods: field(&o.methods, &o.not_methods),
        paths: field(&o.paths, &o.not_paths),
    }
}

fn condition(c: &Condition) -> AuthzCondition {
    let key = match c.key.as_str() {
        "source.ip" => ConditionKey::SourceIp,
        "remote.ip" => ConditionKey::RemoteIp,
        "source.namespace" => ConditionKey::SourceNamespace,
        "source.principal" => ConditionKey::SourcePrincipal,
        "destination.ip" => ConditionKey::DestinationIp,
        "destination.port" => ConditionKey::DestinationPort,
        "connection.sni" => ConditionKey::ConnectionSni,
        k => match k
            .strip_prefix("request.headers[")
            .and_then(|h| h.strip_suffix(']'))
        {
            Some(h) => ConditionKey::RequestHeader(h.to_ascii_lowercase()),
            None => ConditionKey::RequestAuth(k.to_string()),
        },
    };
    AuthzCondition {
        key,
        values: patterns(&c.values),
        not_values: patterns(&c.not_values),
    }
}

/// Where a security policy (AuthorizationPolicy, RequestAuthentication) applies.
pub(crate) struct Scope<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub selector: Option<&'a meshwork_api::generated::common::WorkloadSelector>,
    /// It names `targetRef(s)`: Gateway API and Service resources, which meshwork does not
    /// read.
    pub targeted: bool,
}

impl Scope<'_> {
    /// The policy's `ns/name` when it applies to a workload in `namespace` with `labels`:
    /// it is in the root namespace or the workload's, and its selector, if any, matches.
    pub fn applies(
        &self,
        mesh: &MeshConfig,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<String> {
        let ns = self.namespace;
        let in_scope = ns == mesh.root_namespace || ns == namespace;
        let selected = self
            .selector
            .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
        (in_scope && selected && !self.targeted).then(|| format!("{ns}/{}", self.name))
    }
}

/// The policies that apply to a workload in `namespace` with `labels`.
pub fn for_workload(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Vec<AuthorizationPolicy> {
    let mut out = Vec::new();
    for o in objects {
        let Object::AuthorizationPolicy(p) = o else {
            continue;
        };
        let scope = Scope {
            namespace: p.metadata.namespace.as_deref().unwrap_or_default(),
            name: p.metadata.name.as_deref().unwrap_or_default(),
            selector: p.spec.selector.as_ref(),
            targeted: !p.spec.target_refs.is_empty() || p.spec.target_ref.is_some(),
        };
        let Some(name) = scope.applies(mesh, namespace, labels) else {
            continue;
        };
        let action = match p.spec.action.unwrap_or_default() {
            AuthorizationAction::Allow => AuthzAction::Allow,
            AuthorizationAction::Deny => AuthzAction::Deny,
            AuthorizationAction::Audit => AuthzAction::Audit,
            AuthorizationAction::Custom => {
                warnings.push(format!(
                    "AuthorizationPolicy {name}: CUSTOM (external authorization) is not supported yet; the requests it would check are denied"
                ));
                AuthzAction::Deny
            }
        };
        let rules = p
            .spec
            .rules
            .iter()
            .map(|r| AuthzRule {
                from: r
                    .from
                    .iter()
                    .filter_map(|f| f.source.as_ref())
                    .map(source)
                    .collect(),
                to: r
                    .to
                    .iter()
                    .filter_map(|t| t.operation.as_ref())
                    .map(operation)
                    .collect(),
                when: r.when.iter().map(condition).collect(),
            })
            .collect();
        out.push(AuthorizationPolicy {
            name,
            action,
            rules,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
