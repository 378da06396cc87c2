//! Istio's default path normalization (BASE, RFC 3986): `.` and `..` segments, also when
//! their dots are percent-encoded (`%2e`, `%2E`), are resolved before routing, and the
//! normalized path is what goes upstream.

use http::Uri;

/// Normalizes the request's path in place.
pub fn normalize(parts: &mut http::request::Parts) {
    let path = parts.uri.path();
    if !path.split('/').any(|seg| dots(seg).is_some()) {
        return;
    }
    let normalized = remove_dot_segments(path);
    let pq = match parts.uri.query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized,
    };
    let mut uri = http::uri::Parts::from(parts.uri.clone());
    if let Ok(p) = pq.parse() {
        uri.path_and_query = Some(p);
        if let Ok(u) = Uri::from_parts(uri) {
            parts.uri = u;
        }
    }
}

/// A segment that is a dot segment once `%2e` is decoded: `Some(1)` for `.`, `Some(2)`
/// for `..`.
fn dots(seg: &str) -> Option<usize> {
    match seg {
        "." => return Some(1),
        ".." => return Some(2),
        // At most `%2e%2e`; most segments have no `%` at all and cost no allocation.
        _ if seg.len() > 6 || !seg.contains('%') => return None,
        _ => {}
    }
    let decoded = seg.replace("%2e", ".").replace("%2E", ".");
    match decoded.as_str() {
        "." => Some(1),
        ".." => Some(2),
        _ => None,
    }
}

/// RFC 3986 section 5.2.4, for absolute paths.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match dots(seg) {
            Some(1) => trailing_slash = i == last,
            Some(_) => {
                out.pop();
                trailing_slash = i == last;
            }
            None => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(remove_dot_segments("/web/../api/x"), "/api/x");
        assert_eq!(remove_dot_segments("/a/./b/../../c"), "/c");
        assert_eq!(remove_dot_segments("/../../x"), "/x");
        assert_eq!(remove_dot_segments("/a/b/.."), "/a/");
        assert_eq!(remove_dot_segments("/a/b/."), "/a/b/");
        assert_eq!(remove_dot_segments("/public/%2e%2e/admin"), "/admin");
        assert_eq!(remove_dot_segments("/public/%2E%2e/admin"), "/admin");
        assert_eq!(remove_dot_segments("/a/.%2e/b/%2E/c"), "/b/c");
        assert_eq!(remove_dot_segments("/a/%2e%2ex"), "/a/%2e%2ex");
    }
}
