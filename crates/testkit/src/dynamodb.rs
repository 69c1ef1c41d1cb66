//! [`DynamoDbServer`]: a DynamoDB emulator (moto's `moto_server`) started
//! by the test on a free port, killed on drop, stoppable and restartable
//! on the same port, with the tables the test created made again after a
//! restart (moto keeps everything in memory).
//!
//! Tables are created and items read over DynamoDB's own JSON protocol
//! with a plain HTTP request, so that testkit needs no AWS SDK: the code
//! under test brings its own. moto does not check signatures; any
//! credentials and region do. No test is skipped when `moto_server` is
//! missing: that is a failure that says how to install it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::free_port;

const INSTALL_HINT: &str = "moto_server (the DynamoDB emulator) is required by the DynamoDB tests \
and was not found. Install it with `pip install 'moto[server]==5.2.1'` (or `python3 -m pip install --user \
'moto[server]==5.2.1'`), or run `bash .ci/run`, which installs it. Set MOTO_SERVER_BIN to use a binary \
outside PATH.";

/// A `moto_server` process owned by one test.
pub struct DynamoDbServer {
    port: u16,
    child: Option<Child>,
    tables: Vec<String>,
}

fn binary() -> String {
    std::env::var("MOTO_SERVER_BIN").unwrap_or_else(|_| "moto_server".to_owned())
}

impl DynamoDbServer {
    /// Starts the emulator on a free port and waits until it answers.
    pub fn start() -> Self {
        // Picking a free port then binding it is racy between parallel
        // tests; a server that loses the race exits, and we try another.
        for _ in 0..10 {
            let mut server = Self {
                port: free_port(),
                child: None,
                tables: Vec::new(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("moto_server failed to start on 10 different ports");
    }

    fn spawn(&mut self) -> bool {
        let child = match Command::new(binary())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(e) => panic!("could not start moto_server: {e}"),
        };
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if self.try_call("ListTables", &json!({})).is_some() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "moto_server on port {} did not answer within 30 s",
            self.port
        );
    }

    /// The emulator's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the endpoint URL for the SDK.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `name` the way the idempotency store needs it: keyed on
    /// `pk` (a string), on demand, with TTL on `ttl`.
    pub fn create_table(&mut self, name: &str) {
        self.make_table(name);
        self.tables.push(name.to_owned());
    }

    fn make_table(&self, name: &str) {
        self.call(
            "CreateTable",
            &json!({
                "TableName": name,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            }),
        );
        self.call(
            "UpdateTimeToLive",
            &json!({
                "TableName": name,
                "TimeToLiveSpecification": {"Enabled": true, "AttributeName": "ttl"},
            }),
        );
    }

    /// Every item of `table` (a `Scan`), in DynamoDB's JSON form.
    pub fn items(&self, table: &str) -> Vec<Value> {
        let reply = self.call("Scan", &json!({ "TableName": table }));
        reply["Items"].as_array().cloned().unwrap_or_default()
    }

    /// Writes `item` (DynamoDB JSON) into `table` as it is, unconditionally.
    pub fn put_raw(&self, table: &str, item: Value) {
        self.call("PutItem", &json!({ "TableName": table, "Item": item }));
    }

    /// Kills the emulator (as an outage would) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the emulator again on the same port, with empty copies of the
    /// tables created before.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        let started = crate::server::respawn(
            || self.spawn(),
            Duration::from_secs(30),
            Duration::from_millis(100),
        );
        assert!(started, "moto_server could not restart on port {port}");
        for table in &self.tables {
            self.make_table(table);
        }
    }

    /// One DynamoDB API call (`target` as in `X-Amz-Target`); panics with
    /// the emulator's answer unless it is a 200.
    pub fn call(&self, target: &str, body: &Value) -> Value {
        let (status, text) = self.try_call(target, body).unwrap_or_else(|| {
            panic!("{target}: no answer from moto_server on port {}", self.port)
        });
        assert_eq!(status, 200, "{target} failed: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {text}"))
    }

    fn try_call(&self, target: &str, body: &Value) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let body = body.to_string();
        // moto reads the region and service from the credential scope.
        let request = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             X-Amz-Target: DynamoDB_20120810.{target}\r\n\
             Content-Type: application/x-amz-json-1.0\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            port = self.port,
            len = body.len(),
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).ok()?;
        let reply = String::from_utf8_lossy(&reply);
        let (head, text) = reply.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text.to_owned()))
    }
}

impl Drop for DynamoDbServer {
    fn drop(&mut self) {
        self.stop();
    }
}
