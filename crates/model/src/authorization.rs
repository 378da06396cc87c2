//! AuthorizationPolicies for one workload (a gateway today): the policies of the root
//! namespace without a selector (mesh-wide), those of the root namespace whose selector
//! matches the workload, and those of the workload's namespace without a selector or with
//! one that matches. Values become patterns and condition keys an enum.

use std::collections::BTreeMap;

use crate::attachment::Attachment;
use meshwork_api::generated::security::{AuthorizationAction, Condition, Operation, Source};
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::Object;
use meshwork_resources::authorization::{
    AuthorizationPolicy, AuthzAction, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource,
    ConditionKey, EXT_AUTHZ_METADATA, ExtAuthz, Field, MetadataCondition, MetadataMatch, Pattern,
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

/// `serviceAccounts` (`ns/sa`) as patterns of the principal.
fn service_accounts(s: &Source) -> Field<Pattern> {
    let account = |sa: &String| match sa.split_once('/') {
        Some((ns, name)) => Pattern::Suffix(format!("/ns/{ns}/sa/{name}")),
        None => Pattern::Suffix(format!("/sa/{sa}")),
    };
    Field {
        values: s.service_accounts.iter().map(account).collect(),
        not_values: s.not_service_accounts.iter().map(account).collect(),
    }
}

/// `trustDomains` as patterns of the principal.
fn trust_domains(s: &Source) -> Field<Pattern> {
    let domain = |td: &String| Pattern::Prefix(format!("{td}/"));
    Field {
        values: s.trust_domains.iter().map(domain).collect(),
        not_values: s.not_trust_domains.iter().map(domain).collect(),
    }
}

fn source(s: &Source) -> AuthzSource {
    AuthzSource {
        principals: field(&s.principals, &s.not_principals),
        service_accounts: service_accounts(s),
        trust_domains: trust_domains(s),
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
    match condition_key(&c.key) {
        ConditionKey::FilterMetadata(mut m) => {
            m.values = c.values.iter().map(|v| MetadataMatch::parse(v)).collect();
            m.not_values = c
                .not_values
                .iter()
                .map(|v| MetadataMatch::parse(v))
                .collect();
            AuthzCondition {
                key: ConditionKey::FilterMetadata(m),
                values: Vec::new(),
                not_values: Vec::new(),
            }
        }
        key => AuthzCondition {
            key,
            values: patterns(&c.values),
            not_values: patterns(&c.not_values),
        },
    }
}

/// The attribute a condition's `key` names.
fn condition_key(key: &str) -> ConditionKey {
    match key {
        "source.ip" => ConditionKey::SourceIp,
        "remote.ip" => ConditionKey::RemoteIp,
        "source.namespace" => ConditionKey::SourceNamespace,
        "source.principal" => ConditionKey::SourcePrincipal,
        "source.trustDomain" => ConditionKey::SourceTrustDomain,
        "destination.ip" => ConditionKey::DestinationIp,
        "destination.port" => ConditionKey::DestinationPort,
        "connection.sni" => ConditionKey::ConnectionSni,
        k if k.starts_with("request.auth.") => ConditionKey::RequestAuth(k.to_string()),
        k => {
            if let Some(h) = k
                .strip_prefix("request.headers[")
                .and_then(|h| h.strip_suffix(']'))
            {
                return ConditionKey::RequestHeader(h.to_ascii_lowercase());
            }
            // `experimental.envoy.filters.a.b[c]`: the filter `envoy.filters.a.b`, key `c`.
            let metadata = k
                .strip_prefix("experimental.")
                .filter(|f| f.starts_with("envoy.filters."))
                .and_then(|f| f.strip_suffix(']'))
                .and_then(|f| f.split_once('['));
            match metadata {
                Some((filter, key)) => ConditionKey::FilterMetadata(MetadataCondition {
                    filter: filter.to_string(),
                    key: key.to_string(),
                    values: Vec::new(),
                    not_values: Vec::new(),
                }),
                None => ConditionKey::Unknown(k.to_string()),
            }
        }
    }
}

/// Where a security policy (AuthorizationPolicy, RequestAuthentication) applies.
pub(crate) struct Scope<'a> {
    pub name: &'a str,
    pub attachment: Attachment<'a>,
}

impl<'a> Scope<'a> {
    /// The scope of an AuthorizationPolicy.
    fn of_policy(p: &'a meshwork_api::resource::AuthorizationPolicy) -> Scope<'a> {
        Scope {
            name: p.metadata.name.as_deref().unwrap_or_default(),
            attachment: Attachment::new(
                p.metadata.namespace.as_deref(),
                p.spec.selector.as_ref(),
                p.spec.target_ref.as_ref(),
                &p.spec.target_refs,
            ),
        }
    }

    /// The policy's `ns/name` when it applies to a workload in `namespace` with `labels`:
    /// it is in the root namespace or the workload's and its selector, if any, matches;
    /// or its targetRefs name the workload's Gateway. A policy in the workload's
    /// namespace whose targets only waypoints take is reported.
    pub fn applies(
        &self,
        mesh: &MeshConfig,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        kind: &str,
        warnings: &mut Vec<String>,
    ) -> Option<String> {
        let ns = self.attachment.namespace;
        if self
            .attachment
            .attaches(&mesh.root_namespace, true, namespace, labels)
        {
            return Some(format!("{ns}/{}", self.name));
        }
        if ns == namespace
            && let Some(why) = self.attachment.waypoint_only()
        {
            warnings.push(format!("{kind} {ns}/{}: {why}", self.name));
        }
        None
    }
}

/// The external authorizer a CUSTOM policy names: an `envoyExtAuthzHttp` or
/// `envoyExtAuthzGrpc` extension provider of the mesh config.
fn custom_provider(
    p: &meshwork_api::resource::AuthorizationPolicy,
    mesh: &MeshConfig,
) -> Result<ExtAuthz, String> {
    let name = p
        .spec
        .provider
        .as_ref()
        .and_then(|p| p.name.clone())
        .ok_or("CUSTOM names no provider")?;
    let provider = mesh
        .provider(&name)
        .ok_or_else(|| format!("provider {name} is not in the mesh config's extensionProviders"))?;
    let (settings, grpc) = match (
        &provider.envoy_ext_authz_http,
        &provider.envoy_ext_authz_grpc,
    ) {
        (Some(h), _) => (h, false),
        (None, Some(g)) => (g, true),
        _ => return Err(format!("provider {name} is not an external authorizer")),
    };
    let text = |k: &str| {
        settings
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let list = |k: &str| -> Vec<Pattern> {
        settings
            .get(k)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .map(|h| Pattern::parse(&h.to_ascii_lowercase()))
            .collect()
    };
    let service = text("service");
    let port = settings.get("port").and_then(|v| v.as_u64()).unwrap_or(0);
    if service.is_empty() || port == 0 {
        return Err(format!("provider {name} needs a service and a port"));
    }
    Ok(ExtAuthz {
        provider: name,
        address: format!("{service}:{port}"),
        grpc,
        path_prefix: text("pathPrefix"),
        timeout_ms: settings
            .get("timeout")
            .and_then(|v| v.as_str())
            .and_then(|t| meshwork_api::duration::parse_duration(t).ok())
            .map_or(600_000, |d| d.as_millis() as u64),
        fail_open: settings.get("failOpen").and_then(|v| v.as_bool()) == Some(true),
        status_on_error: text("statusOnError").parse().unwrap_or(403),
        include_request_headers: list("includeRequestHeadersInCheck"),
        include_additional_headers: settings
            .get("includeAdditionalHeadersInCheck")
            .and_then(|v| v.as_object())
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_string())))
            .collect(),
        headers_to_upstream_on_allow: list("headersToUpstreamOnAllow"),
        headers_to_downstream_on_deny: list("headersToDownstreamOnDeny"),
    })
}

/// The external authorizer of a workload's CUSTOM policies: the provider of the first
/// that applies (Istio allows one provider per workload).
pub fn ext_authz_for_workload(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Option<ExtAuthz> {
    let mut found: Option<ExtAuthz> = None;
    for o in objects {
        let Object::AuthorizationPolicy(p) = o else {
            continue;
        };
        if p.spec.action != Some(AuthorizationAction::Custom) {
            continue;
        }
        let Some(name) = Scope::of_policy(p).applies(
            mesh,
            namespace,
            labels,
            "AuthorizationPolicy",
            &mut Vec::new(),
        ) else {
            continue;
        };
        let Ok(provider) = custom_provider(p, mesh) else {
            continue;
        };
        match &found {
            Some(f) if f.provider != provider.provider => warnings.push(format!(
                "AuthorizationPolicy {name}: a workload has one CUSTOM provider ({}); {} is not used, and what this policy matches is denied",
                f.provider, provider.provider
            )),
            Some(_) => {}
            None => found = Some(provider),
        }
    }
    found
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
    let chosen = ext_authz_for_workload(objects, mesh, namespace, labels, &mut Vec::new());
    for o in objects {
        let Object::AuthorizationPolicy(p) = o else {
            continue;
        };
        let Some(name) =
            Scope::of_policy(p).applies(mesh, namespace, labels, "AuthorizationPolicy", warnings)
        else {
            continue;
        };
        let action = match p.spec.action.unwrap_or_default() {
            AuthorizationAction::Allow => AuthzAction::Allow,
            AuthorizationAction::Deny => AuthzAction::Deny,
            AuthorizationAction::Audit => AuthzAction::Audit,
            AuthorizationAction::Custom => match custom_provider(p, mesh) {
                // One provider per workload: a policy naming another is not sent to it.
                Ok(provider)
                    if chosen
                        .as_ref()
                        .is_some_and(|c: &ExtAuthz| c.provider != provider.provider) =>
                {
                    AuthzAction::Deny
                }
                Ok(_) => AuthzAction::Custom,
                Err(why) => {
                    warnings.push(format!(
                        "AuthorizationPolicy {name}: {why}; the requests it would check are denied"
                    ));
                    AuthzAction::Deny
                }
            },
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
        for key in p.spec.rules.iter().flat_map(|r| &r.when).map(|c| &c.key) {
            match condition_key(key) {
                ConditionKey::Unknown(_) => warnings.push(format!(
                    "AuthorizationPolicy {name}: the condition key {key} is not one meshwork knows; it never holds"
                )),
                ConditionKey::FilterMetadata(m) if m.filter != EXT_AUTHZ_METADATA => {
                    warnings.push(format!(
                        "AuthorizationPolicy {name}: the condition key {key} reads the metadata of {}, a filter meshwork does not run (only {EXT_AUTHZ_METADATA} leaves metadata); it never holds",
                        m.filter,
                    ))
                }
                _ => {}
            }
        }
        out.push(AuthorizationPolicy {
            name,
            action,
            rules,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
