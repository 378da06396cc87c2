//! One module per subcommand.
pub mod analyze;
pub mod authn;
pub mod control;
pub mod demo;
pub mod echo;
pub mod iptables;
pub mod proxy;
pub mod proxy_config;
pub mod proxy_status;
pub mod settings;
pub mod token;
pub mod up;
pub mod validate;
pub mod wait;

/// Runs `work` on a new tokio runtime: success, or the error logged and exit code 1.
pub fn block_on<E: std::fmt::Display>(
    work: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(work) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Left-aligned columns, three spaces apart, as istioctl's tables.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
