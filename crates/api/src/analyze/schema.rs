//! `schema.ValidationAnalyzer`: what `meshwork validate` finds, as analyzer messages.
//! Errors are IST0106 and warnings IST0133, except the unreachable-rule warnings of
//! VirtualServices, which are IST0130 and IST0131 as in Istio.

use super::messages::*;
use super::{Analyzer, Context, Report};
use crate::diagnostic::{Diagnostic, Severity};

/// The analyzer.
pub const VALIDATION: Analyzer = Analyzer {
    name: "schema.ValidationAnalyzer",
    description: "Runs schema validation (the CRD schemas and Istio's webhook rules) as an analyzer",
    codes: &[
        SCHEMA_VALIDATION_ERROR,
        SCHEMA_WARNING,
        VS_UNREACHABLE_RULE,
        VS_INEFFECTIVE_MATCH,
    ],
    run,
};

fn run(ctx: &Context<'_>, report: &mut Report) {
    for d in ctx.diagnostics {
        // Findings that name no resource are about the input itself: text that is not
        // YAML or not a resource (istioctl's parse errors, which the command reports
        // apart), and kinds meshwork does not read, which are ignored as istioctl ignores
        // kinds it has no analyzer for.
        if d.resource.is_none() {
            continue;
        }
        let (kind, text) = classify(d);
        report.push_at(kind, d.resource.clone(), Some(d.location.clone()), text);
    }
}

fn detail(d: &Diagnostic) -> String {
    match &d.path {
        Some(p) if !p.is_root() => format!("{p}: {}", d.message),
        _ => d.message.clone(),
    }
}

fn classify(d: &Diagnostic) -> (&'static MessageType, String) {
    if d.severity == Severity::Error {
        return (
            SCHEMA_VALIDATION_ERROR,
            format!("Schema validation error: {}", detail(d)),
        );
    }
    if let Some(rest) = d.message.strip_prefix("virtualService rule ") {
        const DUP: &str = " is not used (duplicate/overlapping match in rule ";
        if let Some((rule_match, dup)) = rest.split_once(DUP)
            && let Some((rule, m)) = rule_match.split_once(" match ")
        {
            let dup = dup.trim_end_matches(')');
            return (
                VS_INEFFECTIVE_MATCH,
                format!(
                    "VirtualService rule {rule} match {m} is not used (duplicate/overlapping match in rule {dup})."
                ),
            );
        }
        if let Some((rule, reason)) = rest.split_once(" not used (") {
            let reason = reason.trim_end_matches(')');
            return (
                VS_UNREACHABLE_RULE,
                format!("VirtualService rule {rule} not used ({reason})."),
            );
        }
    }
    (
        SCHEMA_WARNING,
        format!("Schema validation warning: {}", detail(d)),
    )
}
