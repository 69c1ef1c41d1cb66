//! The token against a published test vector, and the refresh logic
//! against a real `redis-server` whose user's password rotates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use redis::AsyncCommands;
use testkit::RedisServer;

use super::*;
use crate::redis_store::{RedisConnection, RedisOptions};

#[test]
fn hmac_sha256_matches_rfc_4231() {
    // Test case 2.
    assert_eq!(
        hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Test case 6: a key longer than the block is hashed first.
    assert_eq!(
        hex(&hmac(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn the_token_matches_a_published_serverless_vector() {
    // Opetushallitus/jod-yksilo IamAuthTokenRequestTest, also reproduced
    // with botocore's SigV4QueryAuth: 2024-08-02T12:11:50Z.
    let auth = IamAuth {
        user: "user123".into(),
        cache_name: "my-cache".into(),
        serverless: true,
        region: "eu-west-1".into(),
    };
    let credentials = AwsCredentials {
        access_key: "accessKey".into(),
        secret_key: "secretKey".into(),
        session_token: None,
    };
    let at = UNIX_EPOCH + Duration::from_secs(1_722_600_710);
    assert_eq!(
        token(&auth, &credentials, at),
        "my-cache/?Action=connect&ResourceType=ServerlessCache&User=user123\
         &X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=accessKey%2F20240802%2Feu-west-1%2Felasticache%2Faws4_request\
         &X-Amz-Date=20240802T121150Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
         &X-Amz-Signature=5dda5db919b1337db6596b2a608924bc10197fb39289b933b60bdb114d5a70dc"
    );
}

#[test]
fn a_session_token_is_signed_and_dates_cross_a_leap_day() {
    let auth = IamAuth {
        user: "App".into(),
        cache_name: "Orders".into(),
        serverless: false,
        region: "us-east-1".into(),
    };
    let credentials = AwsCredentials {
        access_key: "AK".into(),
        secret_key: "SK".into(),
        session_token: Some("a/b+c=".into()),
    };
    let leap_day = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
    let token = token(&auth, &credentials, leap_day);
    assert!(
        token.starts_with("orders/?Action=connect&User=app&"),
        "{token}"
    );
    assert!(token.contains("X-Amz-Date=20240229T123456Z"), "{token}");
    assert!(
        token.contains("X-Amz-Security-Token=a%2Fb%2Bc%3D"),
        "{token}"
    );
    assert!(!token.contains("ResourceType"), "{token}");
}

/// A user `app` whose password the test rotates.
fn set_password(redis: &RedisServer, password: &str) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg("resetpass")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("+@all")
        .query(&mut redis.conn())
        .expect("ACL SETUSER");
}

#[tokio::test]
async fn a_rotated_password_is_used_by_the_live_connection_and_after_a_reconnect() {
    let redis = RedisServer::start();
    set_password(&redis, "first");
    let current = Arc::new(Mutex::new("first".to_owned()));
    let source: PasswordSource = {
        let current = Arc::clone(&current);
        Arc::new(move || Ok(current.lock().unwrap().clone()))
    };
    let rotating = Rotating::new("app".into(), source, Duration::from_millis(100));
    let mut conn =
        RedisConnection::open_with(&redis.url(), &RedisOptions::default(), Some(rotating))
            .expect("connection");

    let _: () = conn.set("k", "1").await.expect("authenticated as app");
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(whoami, "app");

    // Rotate: the server takes only the new password from now on, and the
    // provider hands it out at its next refresh, which the live connection
    // sends as a new AUTH (as ElastiCache needs within 12 hours).
    set_password(&redis, "second");
    *current.lock().unwrap() = "second".to_owned();
    let auths_before = redis.calls("auth");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        redis.calls("auth") >= auths_before + 2,
        "re-authenticated on each refresh"
    );
    let _: () = conn.set("k", "2").await.expect("still authenticated");
    // Drop every connection of `app`: the reconnect must use the new one.
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("app")
        .query(&mut redis.conn())
        .expect("CLIENT KILL");
    let mut answered = false;
    for _ in 0..20 {
        if conn.get::<_, Option<String>>("k").await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answered,
        "the reconnect authenticated with the rotated password"
    );
}
