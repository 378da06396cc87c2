//! `meshwork validate` as a user runs it: the real binary, real files, stdin, exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;

fn meshwork(args: &[&str], stdin: Option<&str>) -> Output {
    support::run(args, stdin)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_example_config_is_valid() {
    let dir = repo().join("examples/config");
    let out = meshwork(&["validate", dir.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "valid: 6 resources accepted (0 errors, 0 warnings)\n"
    );
}

#[test]
fn errors_name_file_line_resource_and_field_and_exit_1() {
    let file = repo().join("crates/api/tests/data/invalid/vs-unknown-field.yaml");
    let out = meshwork(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "{}:18:7: VirtualService default/reviews: spec.http[0].route[1].weigth: unknown field (did you mean \"weight\"?)\n\
             invalid: 0 resources accepted (1 error, 0 warnings)\n",
            file.display()
        )
    );
}

#[test]
fn reads_stdin_with_a_default_namespace_and_warns_about_unsupported_kinds() {
    let yaml = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\nspec: {}\n---\n\
                apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: gw}\n  spec:\n    servers:\n    - port: {number: 80, name: http, protocol: HTTP}\n      hosts: [\"*\"]\n";
    let out = meshwork(&["validate", "-n", "edge", "-o", "json", "-"], Some(yaml));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["resources"], 1);
    assert_eq!(v["warnings"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["severity"], "warning");
    assert_eq!(d["location"]["file"], "-");
    assert_eq!(d["location"]["line"], 1);
    assert_eq!(
        d["message"],
        "networking.istio.io/v1alpha3 EnvoyFilter is not supported by meshwork and is ignored"
    );
}

#[test]
fn list_items_are_located_and_namespaced() {
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: gw}\n  spec:\n    servers:\n    - port: {number: 80, name: http, protocol: HTTP}\n      hosts: [\"*\"]\n      tls: {mode: SIMPLE}\n";
    let out = meshwork(&["validate", "-n", "edge", "-"], Some(yaml));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "-:11:7: Gateway edge/gw: spec.servers[0].tls.serverCertificate: SIMPLE TLS requires a server certificate\n\
         -:11:7: Gateway edge/gw: spec.servers[0].tls.privateKey: SIMPLE TLS requires a private key\n\
         -:11:7: Gateway edge/gw: spec.servers[0].tls: server cannot have TLS settings for plain text HTTP ports\n\
         invalid: 0 resources accepted (3 errors, 0 warnings)\n"
    );
}

#[test]
fn unreadable_input_exits_2() {
    let out = meshwork(&["validate", "/nonexistent/meshwork-config"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/meshwork-config")
    );
}

#[test]
fn a_mesh_config_file_is_checked() {
    let dir = std::env::temp_dir().join(format!("meshwork-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSONN\n",
    )
    .unwrap();
    let cfg = repo().join("examples/config");
    let out = meshwork(
        &[
            "validate",
            "--mesh",
            mesh.to_str().unwrap(),
            cfg.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!(
            "{}:2:1: accessLogEncoding: mesh config: unsupported value \"JSONN\": must be one of \"TEXT\", \"JSON\"",
            mesh.display()
        )),
        "{}",
        stdout(&out)
    );
    std::fs::remove_dir_all(&dir).ok();
}
