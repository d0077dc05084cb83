//! Crash tests with real processes: `device-receiver-sim` over an SQLite inbox is killed with
//! SIGKILL (a) right after answering `202` and (b) right after the vendor's answer was stored;
//! after a restart, each trigger is answered exactly once in Dataverse (wiremock counts).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use carebridge_device_contract::{CustomApiNames, DeviceProcess, SqlInbox};
use carebridge_store::test_support::{fresh_postgres_database, fresh_sqlite_path};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::receiver::webhook_body;
use crate::support::{self, api};

const SECRET: &str = "crash-test-secret";

struct Receiver {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Receiver {
    /// Starts the binary and waits for its `listening on` line.
    fn start(db: &str, dataverse: &MockServer, hold: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_device-receiver-sim"))
            .env("CAREBRIDGE_INBOX", db)
            .env("CAREBRIDGE_DATAVERSE_URL", dataverse.uri())
            .env("CAREBRIDGE_DATAVERSE_TOKEN", "test-token")
            .env("CAREBRIDGE_RECEIVER_SECRET", SECRET)
            .env("CAREBRIDGE_INBOX_LEASE_MS", "1000")
            .env("CAREBRIDGE_RECEIVER_HOLD", hold)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn device-receiver-sim");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("receiver started");
        let addr = first
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_owned();
        Self { child, addr, lines }
    }

    async fn post(&self, body: &serde_json::Value) -> u16 {
        reqwest_post(&self.addr, body).await
    }

    /// Waits for `line` on stdout.
    fn expect_line(&self, line: &str) {
        let got = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from the receiver");
        assert_eq!(got, line);
    }

    /// SIGKILL, then reap.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

async fn reqwest_post(addr: &str, body: &serde_json::Value) -> u16 {
    // A plain HTTP/1.1 request over a TCP stream keeps reqwest out of this crate's tests.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /triggers HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-carebridge-key: {SECRET}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line")
}

fn inbound(process: DeviceProcess) -> String {
    api(&CustomApiNames::default().get(process).inbound)
}

async fn dataverse() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

/// Waits until every trigger is answered in the inbox, then a little longer for stray calls.
async fn wait_all_answered(db: &str, n: u64) {
    let inbox = SqlInbox::open(db).await.expect("inbox");
    for _ in 0..400 {
        let counts = inbox.counts().await.expect("counts");
        if counts.answered == n && counts.pending == 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("triggers were not answered after the restart");
}

async fn sqlite(prefix: &str) -> String {
    fresh_sqlite_path(prefix)
        .to_str()
        .expect("utf-8 temp dir")
        .to_owned()
}

async fn killed_right_after_202(db: &str) {
    let server = dataverse().await;
    let processes = [
        DeviceProcess::Enroll,
        DeviceProcess::SyncDevices,
        DeviceProcess::AssignDevice,
    ];
    // The first process accepts but never processes: SIGKILL right after the 202s.
    let first = Receiver::start(db, &server, "accepted");
    for p in processes {
        assert_eq!(first.post(&webhook_body(p)).await, 202);
    }
    first.kill();
    assert_eq!(
        support::bodies(&server, &inbound(DeviceProcess::Enroll))
            .await
            .len(),
        0
    );

    let second = Receiver::start(db, &server, "");
    wait_all_answered(db, 3).await;
    second.kill();
    for p in processes {
        let calls = support::bodies(&server, &inbound(p)).await.len();
        assert_eq!(calls, 1, "{p} answered {calls} times");
    }
}

async fn killed_right_after_the_vendor_answered(db: &str) {
    let server = dataverse().await;
    // The first process stops for good once the vendor's answer is stored, before Dataverse.
    let first = Receiver::start(db, &server, "vendor-answered");
    assert_eq!(first.post(&webhook_body(DeviceProcess::Enroll)).await, 202);
    first.expect_line("held at vendor-answered");
    first.kill();
    assert_eq!(
        support::bodies(&server, &inbound(DeviceProcess::Enroll))
            .await
            .len(),
        0
    );

    // The restarted process waits out the dead worker's lease, then goes straight to Dataverse.
    let second = Receiver::start(db, &server, "");
    assert_eq!(
        second
            .post(&webhook_body(DeviceProcess::AssignDevice))
            .await,
        202
    );
    wait_all_answered(db, 2).await;
    second.kill();
    for p in [DeviceProcess::Enroll, DeviceProcess::AssignDevice] {
        let calls = support::bodies(&server, &inbound(p)).await.len();
        assert_eq!(calls, 1, "{p} answered {calls} times");
    }
    // Every request wiremock saw was an inbound call: nothing else reached Dataverse.
    let all = server.received_requests().await.unwrap_or_default().len();
    assert_eq!(all, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_right_after_202_each_trigger_answered_once_after_restart() {
    killed_right_after_202(&sqlite("cb-crash-a").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_killed_right_after_202_each_trigger_answered_once_after_restart() {
    let db = fresh_postgres_database().await.expect("postgres database");
    killed_right_after_202(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_right_after_the_vendor_answered_each_trigger_answered_once_after_restart() {
    killed_right_after_the_vendor_answered(&sqlite("cb-crash-b").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_killed_right_after_the_vendor_answered_each_trigger_answered_once_after_restart()
{
    let db = fresh_postgres_database().await.expect("postgres database");
    killed_right_after_the_vendor_answered(&db).await;
}
