//! `meshwork validate` on what README.md says it reads: directories searched recursively
//! for `*.yaml`, `*.yml` and `*.json` (hidden entries and other files skipped), and
//! `.yml` and `.json` files named directly.

use std::path::Path;
use std::process::{Command, Output};

fn validate(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .arg("validate")
        .args(args)
        .output()
        .expect("meshwork runs")
}

const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: edge}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";

#[test]
fn directories_are_searched_recursively_for_yaml_yml_and_json() {
    let dir = std::env::temp_dir().join(format!("meshwork-validate-paths-{}", std::process::id()));
    let deeper = dir.join("sub/deeper");
    std::fs::create_dir_all(&deeper).unwrap();
    std::fs::create_dir_all(dir.join(".hidden")).unwrap();
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    // One error in each of a .yml and a .json file, two levels down.
    std::fs::write(
        dir.join("sub/route.yml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: edge}\nspec:\n  hosts: [a.example.test]\n  http:\n  - route: [{destination: {host: a}, weigth: 1}]\n",
    )
    .unwrap();
    std::fs::write(
        deeper.join("rule.json"),
        r#"{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
 "metadata": {"name": "d", "namespace": "edge"},
 "spec": {"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}}
"#,
    )
    .unwrap();
    // Not configuration: skipped, though invalid.
    std::fs::write(dir.join("notes.txt"), "kind: nonsense").unwrap();
    std::fs::write(dir.join(".draft.yaml"), "kind: nonsense").unwrap();
    std::fs::write(dir.join(".hidden/x.yaml"), "kind: nonsense").unwrap();

    let out = validate(&[&dir]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let yml = format!("{}:7:", dir.join("sub/route.yml").display());
    let json = format!("{}:", deeper.join("rule.json").display());
    // Files in path order: sub/deeper/rule.json, then sub/route.yml.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "two findings and the summary: {text}");
    assert!(
        lines[0].starts_with(&json) && lines[0].contains("FASTEST"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&yml) && lines[1].contains("weigth: unknown field"),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "invalid: 1 resource accepted (2 errors, 0 warnings)"
    );

    // Files named directly, whatever their extension says.
    let good_json = deeper.join("gateway.json");
    std::fs::write(
        &good_json,
        r#"{"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "j", "namespace": "edge"},
 "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}"#,
    )
    .unwrap();
    let good_yml = dir.join("gateway.yml");
    std::fs::write(&good_yml, GATEWAY.replace("name: gw", "name: gw2")).unwrap();
    let out = validate(&[&good_json, &good_yml]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "valid: 2 resources accepted (0 errors, 0 warnings)\n"
    );
    assert_eq!(out.status.code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
