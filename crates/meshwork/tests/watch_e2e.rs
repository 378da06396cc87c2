//! The config watcher never goes deaf, and a bad resource is rejected alone: a directory
//! renamed away and back, a Kubernetes volume's `..data` symlink swap, files deleted and
//! recreated are all followed; a bad file does not block a good change in another.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

fn gateway(http: u16) -> String {
    http_gateway(http, r#"["*"]"#)
}

/// A VirtualService for `host` answering `body` directly.
fn answer(name: &str, host: &str, body: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{host}]
  gateways: [istio-system/gw]
  http:
  - directResponse: {{status: 200, body: {{string: "{body}"}}}}
"#
    )
}

fn body(http: u16, host: &str) -> String {
    let out = curl(&[
        "-s",
        "-H",
        &format!("Host: {host}"),
        &format!("http://127.0.0.1:{http}/"),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn served(http: u16, host: &str, expected: &str, what: &str) {
    eventually(Duration::from_secs(10), what, || {
        body(http, host) == expected
    });
}

#[test]
fn a_directory_renamed_away_and_back_is_still_followed() {
    let mut mesh = Mesh::new("rename");
    let http = free_port();
    mesh.config("gateway.yaml", &gateway(http));
    mesh.config("a.yaml", &answer("a", "a.test", "one"));
    mesh.up(&[]);
    served(http, "a.test", "one", "the first version");
    let dir = mesh.dir.path().join("config");
    let away = mesh.dir.path().join("config.away");
    for round in 0..3 {
        std::fs::rename(&dir, &away).unwrap();
        eventually(
            Duration::from_secs(10),
            "the missing directory noticed",
            || mesh.log().matches("cannot read the configuration").count() > round,
        );
        std::fs::rename(&away, &dir).unwrap();
        let text = format!("v{round}");
        mesh.config("a.yaml", &answer("a", "a.test", &text));
        served(http, "a.test", &text, "a change after the rename back");
    }
    assert_eq!(
        body(http, "a.test"),
        "v2",
        "the last good config kept serving"
    );
}

/// Lays out `files` as a Kubernetes ConfigMap volume does: a timestamped directory, the
/// `..data` symlink to it, and a symlink per file through `..data`.
fn configmap_volume(dir: &Path, stamp: &str, files: &[(&str, String)]) {
    let data = dir.join(stamp);
    std::fs::create_dir_all(&data).unwrap();
    for (name, text) in files {
        std::fs::write(data.join(name), text).unwrap();
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(stamp, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[test]
fn a_configmap_volume_symlink_swap_is_followed() {
    let mut mesh = Mesh::new("configmap");
    let http = free_port();
    let dir = mesh.dir.path().join("config");
    std::fs::create_dir_all(&dir).unwrap();
    configmap_volume(
        &dir,
        "..2026_12_01_00_00_00.000000001",
        &[
            ("gateway.yaml", gateway(http)),
            ("a.yaml", answer("a", "a.test", "one")),
        ],
    );
    mesh.up(&[]);
    served(http, "a.test", "one", "the first version");
    configmap_volume(
        &dir,
        "..2026_12_01_00_00_01.000000002",
        &[
            ("gateway.yaml", gateway(http)),
            ("a.yaml", answer("a", "a.test", "two")),
        ],
    );
    served(http, "a.test", "two", "the swapped version");
    assert!(
        !mesh.log().contains("..2026"),
        "the timestamped directories are not read as config themselves:\n{}",
        mesh.log()
    );
}

#[test]
fn files_deleted_and_recreated_are_followed() {
    let mut mesh = Mesh::new("recreate");
    let http = free_port();
    mesh.config("gateway.yaml", &gateway(http));
    mesh.config("a.yaml", &answer("a", "a.test", "one"));
    mesh.up(&[]);
    served(http, "a.test", "one", "the first version");
    let file = mesh.dir.path().join("config/a.yaml");
    std::fs::remove_file(&file).unwrap();
    eventually(Duration::from_secs(10), "the route gone", || {
        status(&["-H", "Host: a.test", &format!("http://127.0.0.1:{http}/")]) == 404
    });
    std::fs::write(&file, answer("a", "a.test", "again")).unwrap();
    served(http, "a.test", "again", "the recreated file");
}

#[test]
fn a_bad_resource_keeps_its_last_good_version_and_other_changes_apply() {
    let mut mesh = Mesh::new("partial");
    let http = free_port();
    mesh.config("gateway.yaml", &gateway(http));
    mesh.config("a.yaml", &answer("a", "a.test", "a1"));
    mesh.config("b.yaml", &answer("b", "b.test", "b1"));
    mesh.up(&[]);
    served(http, "a.test", "a1", "a");
    // a's new version has an unknown field; b's change is good.
    mesh.config(
        "a.yaml",
        &answer("a", "a.test", "a2").replace("directResponse", "directResponze"),
    );
    mesh.config("b.yaml", &answer("b", "b.test", "b2"));
    served(http, "b.test", "b2", "the good change");
    assert_eq!(body(http, "a.test"), "a1", "a keeps its last good version");
    let log = mesh.log();
    assert!(
        log.contains("a.yaml:8:"),
        "the error names the file and line:\n{log}"
    );
    assert!(
        log.contains("VirtualService shop/a: the new version is rejected; the last good version keeps serving"),
        "{log}"
    );
    // A new resource that never had a good version stays out.
    mesh.config(
        "c.yaml",
        &answer("c", "c.test", "c1").replace("directResponse", "directResponze"),
    );
    eventually(Duration::from_secs(10), "c left out", || {
        mesh.log()
            .contains("VirtualService shop/c: rejected; it has no good version")
    });
    assert_eq!(
        status(&["-H", "Host: c.test", &format!("http://127.0.0.1:{http}/")]),
        404
    );
}
