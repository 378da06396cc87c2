//! `meshwork analyze` as a user runs it: the real binary, files and stdin, the output
//! formats, thresholds, namespaces and exit status.

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;

fn meshwork(args: &[&str], stdin: Option<&str>) -> Output {
    support::run(args, stdin)
}

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../api/tests/data/analyze")
        .join(name)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A VirtualService routing to a host that does not exist, and a Service with a port name
/// Istio cannot read (an Info message).
const BROKEN: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviewz}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: web, port: 9080}]
";

#[test]
fn clean_input_exits_0_and_says_so() {
    let file = case("vs-host-ok.yaml");
    let out = meshwork(
        &["analyze", "--use-kube=false", file.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "\u{2714} No validation issues found when analyzing {}.\n",
            file.display()
        )
    );
    // Several files are listed; without files, the namespace is named.
    let other = case("vs-subset-ok.yaml");
    let out = meshwork(
        &["analyze", file.to_str().unwrap(), other.to_str().unwrap()],
        None,
    );
    assert_eq!(
        stderr(&out),
        format!(
            "\u{2714} No validation issues found when analyzing:\n  - {}\n  - {}\n",
            file.display(),
            other.display()
        )
    );
    let out = meshwork(&["analyze"], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out),
        "\u{2714} No validation issues found when analyzing namespace: default.\n"
    );
}

#[test]
fn an_error_exits_79_and_is_logged_as_istioctl_logs_it() {
    let out = meshwork(&["analyze", "-"], Some(BROKEN));
    assert_eq!(out.status.code(), Some(79));
    assert_eq!(
        stdout(&out),
        "Error [IST0101] (VirtualService default/reviews -:1) Referenced host not found: \"reviewz\"\n"
    );
    assert_eq!(
        stderr(&out),
        "Error: Analyzers found issues when analyzing namespace: default.\n\
         See https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions.\n"
    );
}

#[test]
fn log_lines_name_the_file_and_line_the_resource_was_read_from() {
    let file = case("vs-subset-missing.yaml");
    let out = meshwork(&["analyze", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(79));
    let f = file.display();
    assert_eq!(
        stdout(&out),
        format!(
            "Error [IST0101] (VirtualService default/reviews {f}:13) Referenced host not found: \"reviews\"\n\
             Error [IST0101] (VirtualService default/reviews {f}:13) Referenced host+subset in destinationrule not found: \"reviews+v3\"\n\
             Error [IST0101] (VirtualService default/reviews {f}:13) Referenced mirror host not found: \"reviews\"\n\
             Error [IST0101] (VirtualService default/reviews {f}:13) Referenced mirror+subset in destinationrule not found: \"reviews+v9\"\n"
        )
    );
}

#[test]
fn unreadable_input_exits_2() {
    let out = meshwork(&["analyze", "/nonexistent/config.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read /nonexistent/config.yaml"));
    let out = meshwork(&["analyze", "--use-kube=true", "-"], Some(BROKEN));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not available yet"));
    let out = meshwork(&["analyze", "-k", "-"], Some(BROKEN));
    assert_eq!(out.status.code(), Some(2), "-k alone means --use-kube=true");
    let out = meshwork(&["analyze", "-k=false", "-"], Some(BROKEN));
    assert_eq!(out.status.code(), Some(79));
}

#[test]
fn json_output_is_a_list_of_istioctl_objects() {
    let out = meshwork(&["analyze", "-o", "json", "-"], Some(BROKEN));
    assert_eq!(out.status.code(), Some(79));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{
            "code": "IST0101",
            "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
            "level": "Error",
            "message": "Referenced host not found: \"reviewz\"",
            "origin": "VirtualService default/reviews",
            "reference": "-:1",
        }])
    );
    let out = meshwork(&["analyze", "-o", "json", "-"], Some(""));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "[]\n");
}

#[test]
fn yaml_output_holds_the_same_fields() {
    let out = meshwork(
        &["analyze", "-o", "yaml", "--output-threshold", "info", "-"],
        Some(BROKEN),
    );
    assert_eq!(out.status.code(), Some(79));
    let docs = meshwork_api::source::parse_documents(&stdout(&out)).unwrap();
    let list = docs[0].value.as_array().unwrap();
    let codes: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|m| {
            (
                m["code"].as_str().unwrap(),
                m["level"].as_str().unwrap(),
                m["origin"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ("IST0101", "Error", "VirtualService default/reviews"),
            ("IST0118", "Info", "Service default/reviews"),
        ],
        "errors first, as istioctl sorts"
    );
    assert_eq!(
        list[1]["message"],
        "Port name web (port: 9080, targetPort: 9080) doesn't follow the naming convention of Istio port."
    );
}

#[test]
fn thresholds_choose_what_is_printed_and_what_fails() {
    let service_only = BROKEN.split("---\n").nth(1).unwrap();
    // Info is below the default output threshold (Warning) and failure threshold (Error).
    let out = meshwork(&["analyze", "-"], Some(service_only));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    let out = meshwork(
        &["analyze", "--output-threshold", "Info", "-"],
        Some(service_only),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("Info [IST0118] (Service default/reviews -:1) Port name web"));
    let out = meshwork(
        &["analyze", "--failure-threshold", "Info", "-"],
        Some(service_only),
    );
    assert_eq!(out.status.code(), Some(79));
    assert_eq!(stdout(&out), "", "failing does not change what is printed");
    let out = meshwork(
        &["analyze", "--output-threshold", "Error", "-"],
        Some(BROKEN),
    );
    assert_eq!(stdout(&out).lines().count(), 1);
    let out = meshwork(
        &["analyze", "--failure-threshold", "Bogus", "-"],
        Some(BROKEN),
    );
    assert_eq!(out.status.code(), Some(2), "clap rejects an unknown level");
}

#[test]
fn namespaces_select_what_is_reported() {
    let elsewhere = BROKEN.replace(
        "metadata: {name: reviews}\nspec:\n  hosts",
        "metadata: {name: reviews, namespace: shop}\nspec:\n  hosts",
    );
    // Without -A only the selected namespace (default) is reported.
    let out = meshwork(&["analyze", "-"], Some(&elsewhere));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "");
    let out = meshwork(&["analyze", "-n", "shop", "-"], Some(&elsewhere));
    assert_eq!(out.status.code(), Some(79));
    assert!(stdout(&out).contains("(VirtualService shop/reviews -:1)"));
    let out = meshwork(&["analyze", "-A", "-"], Some(&elsewhere));
    assert_eq!(out.status.code(), Some(79));
    assert!(stdout(&out).contains("(VirtualService shop/reviews -:1)"));
    // -n also names the namespace of resources that name none.
    let out = meshwork(&["analyze", "-n", "edge", "-"], Some(BROKEN));
    assert!(
        stdout(&out).contains("(VirtualService edge/reviews -:1)"),
        "{}",
        stdout(&out)
    );
    let out = meshwork(&["analyze", "--all-namespaces"], None);
    assert_eq!(
        stderr(&out),
        "\u{2714} No validation issues found when analyzing all namespaces.\n"
    );
}

#[test]
fn cluster_scoped_origins_have_no_namespace() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    let out = meshwork(
        &["analyze", "-o", "json", "--output-threshold", "Info", "-"],
        Some(yaml),
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["code"], "IST0102");
    assert_eq!(v[0]["origin"], "Namespace shop");
}

#[test]
fn list_analyzers_names_every_analyzer_and_its_codes() {
    let out = meshwork(&["analyze", "--list-analyzers"], None);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert_eq!(stdout(&meshwork(&["analyze", "-L"], None)), text);
    for a in meshwork_api::analyze::ANALYZERS {
        let at = text
            .find(&format!("* {}:\n    {}\n", a.name, a.description))
            .unwrap_or_else(|| panic!("{} missing", a.name));
        let block = &text[at..];
        for c in a.codes {
            assert!(block.contains(&format!("    {} {} ({})", c.code, c.name, c.level)));
        }
    }
    assert!(text.contains("* virtualservice.GatewayAnalyzer:\n    Checks the gateways associated with each virtual service\n    IST0101 ReferencedResourceNotFound (Error)\n    IST0132 VirtualServiceHostNotFoundInGateway (Warning)\n"));
}

#[test]
fn a_mesh_config_file_is_merged_over_the_defaults() {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    let out = meshwork(&["analyze", "-"], Some(gateway));
    assert_eq!(
        out.status.code(),
        Some(0),
        "the default ingress gateway is assumed"
    );
    let dir = support::TempDir::new("analyze");
    dir.write("mesh.yaml", "ingressControllerMode: \"OFF\"\n");
    let mesh = dir.path().join("mesh.yaml");
    let out = meshwork(
        &["analyze", "--meshConfigFile", mesh.to_str().unwrap(), "-"],
        Some(gateway),
    );
    assert_eq!(out.status.code(), Some(79));
    assert_eq!(
        stdout(&out),
        "Error [IST0101] (Gateway default/gw -:1) Referenced selector not found: \"istio=ingressgateway\"\n"
    );
}

#[test]
fn schema_errors_are_ist0106() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - timeout: 5x\n    route: [{destination: {host: reviews}}]\n";
    let out = meshwork(&["analyze", "-"], Some(yaml));
    assert_eq!(out.status.code(), Some(79));
    assert_eq!(
        stdout(&out),
        "Error [IST0106] (VirtualService default/reviews -:7) Schema validation error: spec.http[0].timeout: must be a valid duration greater than 1ms: invalid duration \"5x\": unknown unit (use ns, us, ms, s, m or h)\n"
    );
}

#[test]
fn messages_can_be_suppressed_by_flag_or_annotation() {
    let out = meshwork(
        &["analyze", "-S", "IST0101=VirtualService *", "-"],
        Some(BROKEN),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    let out = meshwork(&["analyze", "-S", "IST0101=Service *", "-"], Some(BROKEN));
    assert_eq!(out.status.code(), Some(79));
    // istioctl's spelling of a resource, `Kind name.namespace`, works too.
    let out = meshwork(
        &[
            "analyze",
            "-S",
            "IST0101=VirtualService reviews.default",
            "-",
        ],
        Some(BROKEN),
    );
    assert_eq!(out.status.code(), Some(0));
    let annotated = BROKEN.replacen(
        "metadata: {name: reviews}",
        "metadata: {name: reviews, annotations: {galley.istio.io/analyze-suppress: \"IST0101\"}}",
        1,
    );
    let out = meshwork(&["analyze", "-"], Some(&annotated));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn the_docs_table_lists_every_analyzer_with_its_codes() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md"))
            .unwrap();
    let rows: Vec<&str> = docs
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains("Analyzer` |"))
        .collect();
    assert_eq!(rows.len(), meshwork_api::analyze::ANALYZERS.len());
    for (row, a) in rows.iter().zip(meshwork_api::analyze::ANALYZERS) {
        let codes: Vec<&str> = a.codes.iter().map(|c| c.code).collect();
        assert!(
            row.starts_with(&format!("| `{}` | {} |", a.name, codes.join(", "))),
            "{row}"
        );
    }
}

#[test]
fn unparseable_documents_are_reported_apart_and_exit_65() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a\n";
    let out = meshwork(&["analyze", "-"], Some(yaml));
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.starts_with("Error(s) adding files:\n  -:"), "{err}");
    assert!(err.ends_with(
        "No validation issues found when analyzing namespace: default (but 1 file could not be parsed).\n"
    ));
    // A message at the failure threshold still wins: 79.
    let broken = format!("{BROKEN}---\n- not a resource\n");
    let out = meshwork(&["analyze", "-"], Some(&broken));
    assert_eq!(out.status.code(), Some(79));
}
