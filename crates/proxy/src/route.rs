//! The "match route" phase: virtual host by authority, then the first route whose
//! conditions hold, and the weighted choice among its destinations.

use http::request::Parts;

use crate::route_table::{CompiledMatch, CompiledRoute, CompiledVirtualHost, domain_match};

/// What a request is matched on.
pub struct RequestFacts<'a> {
    /// The request head.
    pub parts: &'a Parts,
    /// Authority without port, lower case.
    pub host: &'a str,
    /// Full authority as sent.
    pub authority: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The Gateway port.
    pub gateway_port: u32,
}

/// The virtual host for `host`: the first (most specific) whose domains match.
pub fn virtual_host<'a>(
    vhosts: &'a [CompiledVirtualHost],
    host: &str,
) -> Option<&'a CompiledVirtualHost> {
    vhosts
        .iter()
        .find(|v| v.domains.iter().any(|d| domain_match(d, host)))
}

/// The first route that matches, and the index of the alternative that matched.
pub fn find_route<'a>(
    vh: &'a CompiledVirtualHost,
    req: &RequestFacts<'_>,
) -> Option<(&'a CompiledRoute, Option<usize>)> {
    vh.routes.iter().find_map(|r| {
        if r.matches.is_empty() {
            return Some((r, None));
        }
        r.matches
            .iter()
            .position(|m| matches(m, req))
            .map(|i| (r, Some(i)))
    })
}

fn header_value(parts: &Parts, name: &str) -> Option<String> {
    let values: Vec<&str> = parts
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

fn matches(m: &CompiledMatch, req: &RequestFacts<'_>) -> bool {
    let parts = req.parts;
    if let Some(p) = m.port
        && p != req.gateway_port
    {
        return false;
    }
    if let Some(u) = &m.uri
        && !u.matches(parts.uri.path(), m.ignore_uri_case)
    {
        return false;
    }
    if let Some(s) = &m.scheme
        && !s.matches(req.scheme, false)
    {
        return false;
    }
    if let Some(x) = &m.method
        && !x.matches(parts.method.as_str(), false)
    {
        return false;
    }
    if let Some(a) = &m.authority
        && !a.matches(req.authority, false)
    {
        return false;
    }
    for (name, value, invert) in &m.headers {
        let actual = header_value(parts, name);
        let holds = match (value, &actual) {
            (None, Some(_)) => true,
            (Some(v), Some(a)) => v.matches(a, false),
            (_, None) => false,
        };
        if holds == *invert {
            return false;
        }
    }
    for (name, value) in &m.query {
        match (value, query_value(parts.uri.query(), name)) {
            (_, None) => return false,
            (Some(v), Some(a)) if !v.matches(&a, false) => return false,
            _ => {}
        }
    }
    true
}

/// Picks a destination index by weight; `None` when all weights are zero.
pub fn pick_weighted(weights: impl Iterator<Item = u32> + Clone, total: u32) -> Option<usize> {
    if total == 0 {
        return None;
    }
    let mut roll = fastrand::u32(0..total);
    for (i, w) in weights.enumerate() {
        if roll < w {
            return Some(i);
        }
        roll -= w;
    }
    None
}
