//! The README's main job: examples/quickstart/run.sh starts backends and `meshwork up` on
//! the quickstart config, and its own checks (the curl lines it prints) pass. Its ports
//! come from the environment, free ones, so the test shares the machine with anything.

mod support;

use std::path::Path;
use std::process::Command;

#[test]
fn the_quickstart_runs_and_answers_as_documented() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/run.sh");
    let http = support::free_port();
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("--check")
        .env("MESHWORK", env!("CARGO_BIN_EXE_meshwork"))
        .env("MESHWORK_LOG", "warn")
        .env("QUICKSTART_HTTP", http.to_string());
    for var in [
        "QUICKSTART_API_V1",
        "QUICKSTART_API_V2",
        "QUICKSTART_WEB",
        "QUICKSTART_ADMIN",
        "QUICKSTART_HEALTH",
    ] {
        cmd.env(var, support::free_port().to_string());
    }
    let out = cmd.output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   /web goes to web",
        "ok   x-version: v2 goes to api-v2",
        "ok   unknown paths get 404",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    assert!(stdout.contains(&format!(
        "curl -H 'Host: shop.example.test' http://127.0.0.1:{http}/web/"
    )));
}
