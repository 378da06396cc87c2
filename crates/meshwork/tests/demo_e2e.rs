//! The README's main job, `meshwork demo`: one command runs the control plane, an ingress
//! gateway and Bookinfo behind sidecars, prints what to try, follows edits of its config,
//! and stops everything on Ctrl-C.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn the_demo_runs_bookinfo_prints_what_to_try_and_stops_on_ctrl_c() {
    let base = free_block(30);
    let control = free_port();
    let dir = TempDir::new("demo");
    let mut demo = Proc::start(
        dir.path(),
        "demo",
        &[
            "demo",
            "--base-port",
            &base.to_string(),
            "--control-port",
            &control.to_string(),
            "--secure-port",
            &free_port().to_string(),
        ],
    );
    eventually(Duration::from_secs(30), "the demo is running", || {
        demo.stdout().contains("Bookinfo is running on meshwork")
    });
    let printed = demo.stdout();
    // It runs with mTLS, says so, and a plaintext client of a sidecar is refused.
    assert!(
        printed.contains("with mTLS between its sidecars (PeerAuthentication STRICT"),
        "{printed}"
    );
    assert_eq!(status(&[&format!("http://127.0.10.3:{base}/reviews/0")]), 0);
    let url = format!("http://127.0.0.1:{}/productpage", base + 1);
    assert!(printed.contains(&format!("curl -s {url}")), "{printed}");
    // The printed lines work as printed.
    let cp = format!("127.0.0.1:{control}");
    assert!(printed.contains(&format!("meshwork proxy-status --control-plane {cp}")));
    let status = run(&["proxy-status", "--control-plane", &cp], None);
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        table
            .lines()
            .skip(1)
            .filter(|l| l.contains("SYNCED"))
            .count(),
        7,
        "{table}"
    );
    let routes = run(
        &[
            "proxy-config",
            "routes",
            "productpage-v1.default",
            "--control-plane",
            &cp,
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&routes.stdout).contains("end-user=jason"));
    let chain = |headers: &[&str]| {
        let counts = chains(&url, headers);
        counts.keys().next().cloned().unwrap_or_default()
    };
    assert_eq!(
        chain(&["end-user: jason"]),
        "200 productpage-v1(details-v1,reviews-v2(ratings-v1))"
    );
    // "edit it and the mesh follows"
    let config = printed
        .lines()
        .find_map(|l| l.strip_prefix("The configuration is "))
        .and_then(|l| l.split(':').next())
        .expect("the config file is printed")
        .to_string();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("weight: 50", "weight: 100", 1)
            .replacen("weight: 50", "weight: 0", 1),
    )
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "everyone reaches reviews v1",
        || (0..10).all(|_| chain(&[]) == "200 productpage-v1(details-v1,reviews-v1)"),
    );
    // Ctrl-C stops every process it started.
    std::process::Command::new("kill")
        .args(["-INT", &demo.pid().to_string()])
        .status()
        .unwrap();
    let exit = demo
        .wait_exit(Duration::from_secs(15))
        .expect("the demo stops");
    assert!(exit.success(), "{exit:?}\n{}", demo.stderr());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", base + 1)).is_err(),
        "the gateway is gone"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", control)).is_err(),
        "the control plane is gone"
    );
    assert!(
        !std::path::Path::new(&config).exists(),
        "its temporary config is removed"
    );
}
