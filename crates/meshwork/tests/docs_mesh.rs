//! docs/mesh.md's examples are what the product does: its YAML validates, and the
//! commands it shows are the ones `meshwork demo --print-config` prints for the default
//! ports.

mod support;

use support::*;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/mesh.md")).unwrap()
}

/// The fenced blocks of one language.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim() == format!("```{lang}") => current = Some(String::new()),
            Some(b) if line.trim() == "```" => {
                out.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Every YAML block of a page validates, and there are at least `least`.
fn assert_yaml_validates(page: &str, least: usize) {
    let yaml = blocks(page, "yaml");
    assert!(yaml.len() >= least, "the page has its examples");
    for block in yaml {
        let out = run(&["validate", "-"], Some(&block));
        assert!(
            out.status.success(),
            "{block}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn the_yaml_examples_validate() {
    assert_yaml_validates(&doc(), 3);
}

#[test]
fn the_commands_shown_are_the_ones_the_demo_prints() {
    let dir = TempDir::new("docs-mesh");
    let target = dir.path().join("bookinfo");
    let out = run(&["demo", "--print-config", target.to_str().unwrap()], None);
    assert!(out.status.success());
    let printed =
        String::from_utf8_lossy(&out.stdout).replace(target.to_str().unwrap(), "./bookinfo");
    let shown: Vec<String> = blocks(&doc(), "text")
        .iter()
        .flat_map(|b| b.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.starts_with("meshwork "))
        .collect();
    assert!(shown.len() >= 4, "{shown:?}");
    for line in &shown {
        assert!(
            printed.lines().any(|p| p == line),
            "{line}\nnot in\n{printed}"
        );
    }
    // The ports the page names are the demo's defaults.
    let page = doc();
    for text in [
        "http://127.0.0.1:9081/productpage",
        "--control-plane 127.0.0.1:15010",
    ] {
        assert!(page.contains(text), "{text}");
    }
}

#[test]
fn the_security_page_yaml_examples_validate() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/security.md"
    ))
    .unwrap();
    assert_yaml_validates(&page, 2);
}

/// Every Kubernetes or Istio resource in the page's YAML examples validates (mesh config
/// and Prometheus documents beside them are not resources).
fn assert_resources_validate(page: &str, least: usize) {
    let resources: Vec<String> = blocks(page, "yaml")
        .iter()
        .flat_map(|b| b.split("\n---\n").map(str::to_string).collect::<Vec<_>>())
        .filter(|d| d.contains("apiVersion:"))
        .collect();
    assert!(resources.len() >= least, "the page has its examples");
    for doc in resources {
        let out = run(&["validate", "-"], Some(&doc));
        assert!(
            out.status.success(),
            "{doc}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn the_sidecar_and_telemetry_pages_resources_validate() {
    let page = |name: &str| {
        std::fs::read_to_string(format!("{}/../../docs/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
    };
    assert_resources_validate(&page("sidecar.md"), 2);
    assert_resources_validate(&page("telemetry.md"), 2);
}
