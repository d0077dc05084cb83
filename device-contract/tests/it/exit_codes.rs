//! `device-receiver-sim` exit codes (the table shared by every carebridge binary): 2 for a
//! missing setting, 3 for an inbox database that cannot be reached, 0 after SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn sim() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_device-receiver-sim"));
    cmd.env("CAREBRIDGE_DATAVERSE_URL", "http://127.0.0.1:1")
        .env("CAREBRIDGE_DATAVERSE_TOKEN", "t")
        .env("CAREBRIDGE_RECEIVER_SECRET", "s")
        .env_remove("CAREBRIDGE_INBOX");
    cmd
}

#[test]
fn a_missing_setting_exits_2() {
    let out = sim().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sim()
        .args(["--inbox", "sqlite::memory:"])
        .env_remove("CAREBRIDGE_RECEIVER_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CAREBRIDGE_RECEIVER_SECRET"), "{stderr}");
}

#[test]
fn an_unreachable_inbox_database_exits_3() {
    let out = sim()
        .args(["--inbox", "postgres://carebridge@127.0.0.1:1/inbox"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
}

#[cfg(unix)]
#[test]
fn sigint_stops_it_with_0() {
    let dir = std::env::temp_dir().join(format!("sim-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = sim()
        .arg("--inbox")
        .arg(dir.join("inbox.db"))
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(waited < Duration::from_secs(30), "did not stop");
        std::thread::sleep(Duration::from_millis(100));
        waited += Duration::from_millis(100);
    };
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
