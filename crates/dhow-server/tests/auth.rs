//! Who may call, through the real server over gRPC (in-process, over a `MemNode`): preshared
//! keys and their roles, JWTs minted here with RS256, ES256, EdDSA and HS256 and refused for
//! each thing that can be wrong with them (asserted by the error's reason, not only its
//! code), a JWKS file rotated while the server runs, and health that needs no credential.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhow_proto::v1 as pb;
use dhow_server::auth::settings::{CertificateSettings, IssuerSettings, PresharedKeySettings};
use dhow_server::auth::AuthSettings;
use dhow_server::Config;
use dhow_tests::server::{reason, TestServer, SCHEMA};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status};

const ISSUER: &str = "https://idp.test";
const OTHER: &str = "https://other.test";

fn keys() -> PathBuf {
    dhow_tests::repo_root().join("crates/dhow-server/tests/keys")
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(keys().join(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn issuer(name: &str, algorithms: &[&str], pems: &[&str], hmac: bool) -> IssuerSettings {
    IssuerSettings {
        issuer: name.into(),
        audiences: vec!["dhow".into()],
        algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
        jwks_file: None,
        pem_files: pems.iter().map(|p| keys().join(p)).collect(),
        hmac_secret_file: hmac.then(|| keys().join("hmac1.secret")),
        roles_claim: Some("scope".into()),
        roles: Default::default(),
        default_roles: vec![],
        leeway: Some("5s".into()),
        jwks_refresh: None,
        delegation: None,
    }
}

fn psk(name: &str, key: &str, roles: &[&str]) -> PresharedKeySettings {
    PresharedKeySettings {
        name: name.into(),
        sha256: hex::encode(Sha256::digest(key.as_bytes())),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

fn settings() -> AuthSettings {
    AuthSettings {
        preshared_keys: vec![
            psk("reader", "k-read", &["read"]),
            psk("writer", "k-write", &["read", "write"]),
            psk("admin", "k-admin", &["admin"]),
        ],
        jwt_issuers: vec![
            issuer(
                ISSUER,
                &["RS256", "ES256", "EdDSA", "HS256"],
                &["rsa1.pub", "ec1.pub", "ed1.pub"],
                true,
            ),
            issuer(OTHER, &["RS256"], &["rsa2.pub"], false),
        ],
        client_certificates: vec![],
        jwt_cache_entries: 100,
        env_preshared_key: None,
    }
}

async fn server(auth: AuthSettings) -> TestServer {
    TestServer::start_with(Config {
        auth,
        ..Config::default()
    })
    .await
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

async fn read_schema(s: &TestServer, token: Option<&str>) -> Result<(), Status> {
    match s
        .schema()
        .read_schema(with_token(
            pb::ReadSchemaRequest { consistency: None },
            token,
        ))
        .await
    {
        // No schema yet is an answer past authentication.
        Err(e) if e.code() == Code::FailedPrecondition => Ok(()),
        r => r.map(|_| ()),
    }
}

async fn write_schema(s: &TestServer, token: Option<&str>) -> Result<(), Status> {
    s.schema()
        .write_schema(with_token(
            pb::WriteSchemaRequest {
                schema: SCHEMA.into(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

#[track_caller]
fn refused(r: Result<(), Status>, code: Code, why: &str) {
    let e = r.expect_err("the call must be refused");
    assert_eq!(e.code(), code, "{e:?}");
    assert_eq!(reason(&e), why, "{e:?}");
}

#[tokio::test]
async fn preshared_keys_and_roles() {
    let s = server(settings()).await;
    refused(
        read_schema(&s, None).await,
        Code::Unauthenticated,
        "CREDENTIALS_MISSING",
    );
    refused(
        read_schema(&s, Some("nope")).await,
        Code::Unauthenticated,
        "KEY_UNKNOWN",
    );
    read_schema(&s, Some("k-read")).await.unwrap();
    // A key with `read` cannot change the schema, nor write.
    refused(
        write_schema(&s, Some("k-read")).await,
        Code::PermissionDenied,
        "ROLE_MISSING",
    );
    write_schema(&s, Some("k-write")).await.unwrap();
    let w = s
        .rel()
        .write(with_token(
            pb::WriteRequest {
                updates: vec![dhow_tests::server::touch("document:1#viewer@user:a")],
                optional_preconditions: vec![],
            },
            Some("k-read"),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (w.code(), reason(&w).as_str()),
        (Code::PermissionDenied, "ROLE_MISSING")
    );
    assert!(w.message().contains("`write` role"), "{w:?}");
    // Only admin may remove a member: the others are refused before the node sees the call.
    let remove = |token: &'static str| {
        let mut c = s.cluster();
        async move {
            c.remove_member(with_token(
                pb::RemoveMemberRequest {
                    id: 2,
                    force: false,
                },
                Some(token),
            ))
            .await
            .map(|_| ())
        }
    };
    refused(
        remove("k-write").await,
        Code::PermissionDenied,
        "ROLE_MISSING",
    );
    refused(
        remove("k-read").await,
        Code::PermissionDenied,
        "ROLE_MISSING",
    );
    let e = remove("k-admin").await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "past authentication: {e:?}"
    );
    // Health needs no credential.
    let mut h = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    h.check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}

fn mint(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: serde_json::Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn claims(iss: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": iss,
        "sub": "alice",
        "aud": "dhow",
        "exp": now() + 600,
        "iat": now(),
        "scope": "read write",
    })
}

fn rsa1() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key("rsa1.key")).unwrap()
}

#[tokio::test]
async fn jwts_of_each_algorithm_pass() {
    let s = server(settings()).await;
    let hmac = EncodingKey::from_secret(&key("hmac1.secret"));
    let ec = EncodingKey::from_ec_pem(&key("ec1.key")).unwrap();
    let ed = EncodingKey::from_ed_pem(&key("ed1.key")).unwrap();
    for token in [
        mint(Algorithm::RS256, Some("rsa1"), &rsa1(), claims(ISSUER)),
        mint(Algorithm::ES256, Some("ec1"), &ec, claims(ISSUER)),
        mint(Algorithm::EdDSA, Some("ed1"), &ed, claims(ISSUER)),
        mint(Algorithm::HS256, None, &hmac, claims(ISSUER)),
    ] {
        write_schema(&s, Some(&token)).await.unwrap();
        // Twice: the second is answered from the cache.
        write_schema(&s, Some(&token)).await.unwrap();
    }
    // `scope` without `write`: read only.
    let mut c = claims(ISSUER);
    c["scope"] = "read".into();
    let reader = mint(Algorithm::RS256, Some("rsa1"), &rsa1(), c);
    read_schema(&s, Some(&reader)).await.unwrap();
    refused(
        write_schema(&s, Some(&reader)).await,
        Code::PermissionDenied,
        "ROLE_MISSING",
    );
}

#[tokio::test]
async fn bad_jwts_are_refused_for_their_reason() {
    let s = server(settings()).await;
    let good = mint(Algorithm::RS256, Some("rsa1"), &rsa1(), claims(ISSUER));
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(ISSUER);
        f(&mut c);
        mint(Algorithm::RS256, Some("rsa1"), &rsa1(), c)
    };
    let b64 = |v: serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let parts: Vec<&str> = good.split('.').collect();
    let none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    let mut tampered_claims = claims(ISSUER);
    tampered_claims["sub"] = "mallory".into();
    let tampered = format!("{}.{}.{}", parts[0], b64(tampered_claims), parts[2]);
    let rsa_pub_as_secret = |kid: Option<&str>| {
        mint(
            Algorithm::HS256,
            kid,
            &EncodingKey::from_secret(&key("rsa1.pub")),
            claims(ISSUER),
        )
    };
    let rsa2 = EncodingKey::from_rsa_pem(&key("rsa2.key")).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = (now() - 3600).into()),
            "JWT_EXPIRED",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = (now() + 3600).into()),
            "JWT_NOT_YET_VALID",
        ),
        (
            "issued in the future",
            with(&|c| c["iat"] = (now() + 3600).into()),
            "JWT_ISSUED_IN_FUTURE",
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = "https://evil.test".into()),
            "JWT_ISSUER_UNKNOWN",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = "someone-else".into()),
            "JWT_AUDIENCE_INVALID",
        ),
        (
            "no sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            "JWT_CLAIM_MISSING",
        ),
        ("alg none", none, "JWT_ALGORITHM_NOT_ALLOWED"),
        (
            "HS256 with the RSA public key as secret, kid rsa1",
            rsa_pub_as_secret(Some("rsa1")),
            "JWT_KEY_UNKNOWN",
        ),
        (
            "HS256 with the RSA public key as secret, no kid",
            rsa_pub_as_secret(None),
            "JWT_SIGNATURE_INVALID",
        ),
        (
            "unknown kid",
            mint(Algorithm::RS256, Some("nope"), &rsa1(), claims(ISSUER)),
            "JWT_KEY_UNKNOWN",
        ),
        (
            "another issuer's key, its kid",
            mint(Algorithm::RS256, Some("rsa2"), &rsa2, claims(ISSUER)),
            "JWT_KEY_UNKNOWN",
        ),
        (
            "another issuer's key, our kid",
            mint(Algorithm::RS256, Some("rsa1"), &rsa2, claims(ISSUER)),
            "JWT_SIGNATURE_INVALID",
        ),
        (
            "HS256 for an RS256-only issuer",
            mint(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(&key("hmac1.secret")),
                claims(OTHER),
            ),
            "JWT_ALGORITHM_NOT_ALLOWED",
        ),
        ("tampered payload", tampered, "JWT_SIGNATURE_INVALID"),
        (
            "truncated signature",
            good[..good.len() - 10].to_string(),
            "JWT_SIGNATURE_INVALID",
        ),
        (
            "two parts",
            format!("{}.{}", parts[0], parts[1]),
            "KEY_UNKNOWN",
        ),
        ("garbage parts", "a.b.c".to_string(), "JWT_MALFORMED"),
        (
            "12 KiB",
            format!("{}.{}.{}", parts[0], "A".repeat(12 << 10), parts[2]),
            "JWT_TOO_LARGE",
        ),
    ];
    for (what, token, want) in cases {
        let e = read_schema(&s, Some(&token)).await.expect_err(what);
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
        assert_eq!(reason(&e), want, "{what}: {e:?}");
        assert!(
            !e.message().contains(&token[..20.min(token.len())]),
            "{what}: echoes the token"
        );
    }
    // A 1 MB token never reaches the server's check: HTTP/2 refuses a header that large
    // (hyper's limit on CONTINUATION frames, GOAWAY "enhance your calm"). Refused either way,
    // and the server keeps serving.
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(1 << 20), parts[2]);
    let e = read_schema(&s, Some(&huge))
        .await
        .expect_err("a 1 MB token");
    assert_ne!(e.code(), Code::Ok);
    // The good one still passes after all that.
    read_schema(&s, Some(&good)).await.unwrap();
}

fn jwks(entries: &[(&EncodingKey, &str)]) -> String {
    let keys: Vec<serde_json::Value> = entries
        .iter()
        .map(|(k, kid)| {
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(k, Algorithm::RS256).unwrap();
            jwk.common.key_id = Some(kid.to_string());
            serde_json::to_value(jwk).unwrap()
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn a_jwks_file_rotated_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let k1 = rsa1();
    let k2 = EncodingKey::from_rsa_pem(&key("rsa2.key")).unwrap();
    std::fs::write(&file, jwks(&[(&k1, "k1")])).unwrap();
    let mut i = issuer(ISSUER, &["RS256"], &[], false);
    i.jwks_file = Some(file.clone());
    i.jwks_refresh = Some("100ms".into());
    let s = server(AuthSettings {
        jwt_issuers: vec![i],
        jwt_cache_entries: 100,
        ..Default::default()
    })
    .await;
    let old = mint(Algorithm::RS256, Some("k1"), &k1, claims(ISSUER));
    let new = mint(Algorithm::RS256, Some("k2"), &k2, claims(ISSUER));
    read_schema(&s, Some(&old)).await.unwrap();
    refused(
        read_schema(&s, Some(&new)).await,
        Code::Unauthenticated,
        "JWT_KEY_UNKNOWN",
    );
    // Rotate: k2 in, k1 out.
    std::fs::write(&file, jwks(&[(&k2, "k2")])).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read_schema(&s, Some(&new)).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The removed key is refused, even for a token accepted (and remembered) before.
    refused(
        read_schema(&s, Some(&old)).await,
        Code::Unauthenticated,
        "JWT_KEY_UNKNOWN",
    );
}

#[tokio::test]
async fn a_server_without_credentials_is_open() {
    let s = server(AuthSettings::default()).await;
    write_schema(&s, None).await.unwrap();
    // A token sent to an open server changes nothing.
    read_schema(&s, Some("anything")).await.unwrap();
}

#[test]
fn settings_errors_name_what_is_wrong() {
    use dhow_server::auth::Authenticator;
    let mut s = settings();
    s.jwt_issuers[0].algorithms.push("none".into());
    assert!(Authenticator::from_settings(&s)
        .err()
        .unwrap()
        .contains("`none` is never allowed"));
    let mut s = settings();
    s.jwt_issuers[1].hmac_secret_file = Some(keys().join("hmac1.secret"));
    assert!(Authenticator::from_settings(&s)
        .err()
        .unwrap()
        .contains("no HS256"));
    let mut s = settings();
    s.client_certificates.push(CertificateSettings {
        identity: "billing".into(),
        roles: vec!["read".into()],
    });
    assert!(Authenticator::from_settings(&s)
        .err()
        .unwrap()
        .contains("CN=, DNS: or URI:"));
}

mod fuzz {
    use super::*;
    use dhow_server::auth::Authenticator;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Any header, any bytes: an identity or a refusal, never a panic.
        #[test]
        fn credentials_never_panic(header in proptest::collection::vec(any::<u8>(), 0..400),
                                   dots in "[A-Za-z0-9_\\-]{0,40}\\.[A-Za-z0-9_\\-]{0,80}\\.[A-Za-z0-9_\\-]{0,40}") {
            let auth = Authenticator::from_settings(&settings()).unwrap();
            let _ = auth.authenticate(Some(&header), None);
            let bearer = format!("Bearer {dots}");
            let _ = auth.authenticate(Some(bearer.as_bytes()), None);
        }
    }
}
