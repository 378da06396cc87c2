//! Route tables made ready to run: matchers with their regexes compiled, rewrites, and
//! the CORS origins, per virtual host. A table that fails to compile is rejected alone.

use meshwork_resources::RouteTable;
use meshwork_resources::route::{Route, RouteAction, RouteMatch, StringMatcher};
use regex::Regex;

/// A string condition ready to run.
#[derive(Debug)]
pub enum Matcher {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Matches the whole value.
    Regex(Regex),
}

impl Matcher {
    fn build(m: &StringMatcher) -> Result<Matcher, regex::Error> {
        Ok(match m {
            StringMatcher::Exact(s) => Matcher::Exact(s.clone()),
            StringMatcher::Prefix(s) => Matcher::Prefix(s.clone()),
            StringMatcher::Regex(r) => Matcher::Regex(Regex::new(&format!("^(?:{r})$"))?),
        })
    }

    /// Whether `value` satisfies the condition (exact and prefix optionally ignoring case).
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            Matcher::Exact(s) if ignore_case => s.eq_ignore_ascii_case(value),
            Matcher::Exact(s) => s == value,
            Matcher::Prefix(p) if ignore_case => value
                .get(..p.len())
                .is_some_and(|v| v.eq_ignore_ascii_case(p)),
            Matcher::Prefix(p) => value.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

/// A route match, compiled.
#[derive(Debug)]
pub struct CompiledMatch {
    /// The path condition.
    pub uri: Option<Matcher>,
    /// Case-insensitive path.
    pub ignore_uri_case: bool,
    /// Scheme condition.
    pub scheme: Option<Matcher>,
    /// Method condition.
    pub method: Option<Matcher>,
    /// Authority condition.
    pub authority: Option<Matcher>,
    /// Header conditions: name, value (None: present), inverted.
    pub headers: Vec<(String, Option<Matcher>, bool)>,
    /// Query conditions: name, value (None: present).
    pub query: Vec<(String, Option<Matcher>)>,
    /// Gateway port.
    pub port: Option<u32>,
}

impl CompiledMatch {
    fn build(m: &RouteMatch) -> Result<Self, regex::Error> {
        let opt = |m: &Option<StringMatcher>| m.as_ref().map(Matcher::build).transpose();
        Ok(Self {
            uri: opt(&m.uri)?,
            ignore_uri_case: m.ignore_uri_case,
            scheme: opt(&m.scheme)?,
            method: opt(&m.method)?,
            authority: opt(&m.authority)?,
            headers: m
                .headers
                .iter()
                .map(|h| Ok((h.name.clone(), opt(&h.value)?, h.invert)))
                .collect::<Result<_, regex::Error>>()?,
            query: m
                .query_params
                .iter()
                .map(|q| Ok((q.name.clone(), opt(&q.value)?)))
                .collect::<Result<_, regex::Error>>()?,
            port: m.port,
        })
    }
}

/// A route with its matches compiled.
#[derive(Debug)]
pub struct CompiledRoute {
    /// The compiled model route (actions, headers, retries).
    pub route: Route,
    /// Its name, made once for the per-request logs.
    pub name: std::sync::Arc<str>,
    /// Compiled alternatives; empty matches everything.
    pub matches: Vec<CompiledMatch>,
    /// Compiled `uriRegexRewrite` pattern.
    pub rewrite_regex: Option<(Regex, String)>,
    /// Sum of the weights of a forward action.
    pub total_weight: u32,
    /// The CORS policy's allowed origins, compiled.
    pub cors_origins: Vec<Matcher>,
}

/// A virtual host, compiled.
#[derive(Debug)]
pub struct CompiledVirtualHost {
    /// Domains, lower case.
    pub domains: Vec<String>,
    /// Routes in order.
    pub routes: Vec<CompiledRoute>,
}

/// A route table, compiled.
#[derive(Debug)]
pub struct CompiledRouteTable {
    /// Virtual hosts in match order.
    pub virtual_hosts: Vec<CompiledVirtualHost>,
}

/// A route's regex does not compile (validation should have caught it).
#[derive(Debug, thiserror::Error)]
#[error("route {route}: {source}")]
pub struct RouteError {
    /// The route.
    pub route: String,
    /// Why.
    #[source]
    pub source: regex::Error,
}

impl CompiledRouteTable {
    /// Compiles every route of `table`.
    pub fn build(table: &RouteTable) -> Result<CompiledRouteTable, RouteError> {
        let mut virtual_hosts = Vec::new();
        for vh in &table.virtual_hosts {
            let routes = vh
                .routes
                .iter()
                .map(CompiledRoute::build)
                .collect::<Result<_, _>>()?;
            virtual_hosts.push(CompiledVirtualHost {
                domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                routes,
            });
        }
        Ok(CompiledRouteTable { virtual_hosts })
    }
}

impl CompiledRoute {
    fn build(r: &Route) -> Result<CompiledRoute, RouteError> {
        let regex_err = |source| RouteError {
            route: r.name.clone(),
            source,
        };
        let matches = r
            .matches
            .iter()
            .map(CompiledMatch::build)
            .collect::<Result<_, _>>()
            .map_err(regex_err)?;
        let rewrite_regex = match r.rewrite.as_ref().and_then(|rw| rw.uri_regex.as_ref()) {
            Some((pattern, with)) => Some((
                Regex::new(pattern).map_err(regex_err)?,
                envoy_groups_to_regex(with),
            )),
            None => None,
        };
        let total_weight = match &r.action {
            RouteAction::Forward(c) => c.iter().map(|w| w.weight).sum(),
            _ => 0,
        };
        let cors_origins = r
            .cors
            .iter()
            .flat_map(|c| &c.allow_origins)
            .map(Matcher::build)
            .collect::<Result<_, _>>()
            .map_err(regex_err)?;
        Ok(CompiledRoute {
            name: r.name.as_str().into(),
            route: r.clone(),
            matches,
            rewrite_regex,
            total_weight,
            cors_origins,
        })
    }
}

/// Envoy's domain matching: exact, `*.suffix` / `*suffix`, or `*`.
pub fn domain_match(domain: &str, host: &str) -> bool {
    if domain == "*" || domain == host {
        return true;
    }
    match domain.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => false,
    }
}

/// Envoy writes regex groups in a replacement as `\1`; the regex crate as `${1}`.
fn envoy_groups_to_regex(replacement: &str) -> String {
    static GROUP: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    GROUP
        .get_or_init(|| Regex::new(r"\\(\d+)").expect("valid regex"))
        .replace_all(replacement, "$${$1}")
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_like_envoy() {
        assert!(domain_match("*", "a.b"));
        assert!(domain_match("*.example.com", "a.example.com"));
        assert!(domain_match("*.example.com", "a.b.example.com"));
        assert!(!domain_match("*.example.com", "example.com"));
        assert!(domain_match("example.com", "example.com"));
        assert!(!domain_match("example.com", "www.example.com"));
    }

    #[test]
    fn matchers() {
        let re = Matcher::build(&StringMatcher::Regex("/api/v[0-9]+".into())).unwrap();
        assert!(re.matches("/api/v2", false));
        assert!(
            !re.matches("/api/v2/x", false),
            "regexes match the whole value"
        );
        let p = Matcher::build(&StringMatcher::Prefix("/API".into())).unwrap();
        assert!(p.matches("/api/x", true));
        assert!(!p.matches("/api/x", false));
    }
}

#[cfg(test)]
mod rewrite_tests {
    #[test]
    fn envoy_group_references_become_regex_crate_ones() {
        assert_eq!(
            super::envoy_groups_to_regex(r"/v2/\1/x/\12"),
            "/v2/${1}/x/${12}"
        );
        let re = regex::Regex::new("^/api/v1/(.*)$").unwrap();
        assert_eq!(
            re.replace_all(
                "/api/v1/items",
                super::envoy_groups_to_regex(r"/v2/\1").as_str()
            ),
            "/v2/items"
        );
    }
}
