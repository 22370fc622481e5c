//! The CLI against a `dhow serve` that is secured: TLS on the public port and a preshared
//! key. An `https://` endpoint is TLS verified with `--tls-ca` (or `--insecure`), never sent
//! in clear; `--token` says who is asking; and a node on a public address without any
//! authentication refuses to start, saying what to configure.

use std::path::Path;
use std::process::{Command, Output};

use dhow_tests::process::{dhow_bin, Server};

fn make_server_certificate(dir: &Path) {
    let script = r#"
set -euo pipefail
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -keyout ca.key -out ca.crt -subj "/CN=test CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
  -extfile <(printf "subjectAltName=IP:127.0.0.1,DNS:localhost") -out server.crt 2>/dev/null
"#;
    let o = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("bash and openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn dhow(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(dhow_bin())
        .args(args)
        .env_remove("DHOW_ENDPOINT")
        .env_remove("DHOW_TOKEN")
        .env_remove("DHOW_TLS_CA")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tls_and_a_token_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    make_server_certificate(dir.path());
    let f = |n: &str| dir.path().join(n).display().to_string();
    let server = Server::start_with(
        &dir.path().join("data"),
        0,
        &[
            "--tls-cert-file",
            &f("server.crt"),
            "--tls-key-file",
            &f("server.key"),
        ],
        &[("DHOW_PRESHARED_KEY", "s3cret-key")],
    );
    let https = format!("https://{}", server.addr);
    let schema = dhow_tests::repo_root().join("examples/schema.zed");
    let schema = schema.to_str().unwrap();
    let ca = f("ca.crt");
    let write = |extra: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["schema", "write", schema, "--endpoint"];
        a.push(&https);
        a.extend_from_slice(extra);
        dhow(&a, env)
    };
    // TLS verified with the CA, and the key: accepted.
    let o = write(&["--tls-ca", &ca, "--token", "s3cret-key"], &[]);
    assert!(o.status.success(), "{}", err(&o));
    // The same through the environment.
    let o = write(
        &[],
        &[("DHOW_TLS_CA", ca.as_str()), ("DHOW_TOKEN", "s3cret-key")],
    );
    assert!(o.status.success(), "{}", err(&o));
    // --insecure: encrypted, server not verified (self-signed test setups).
    let o = write(&["--insecure", "--token", "s3cret-key"], &[]);
    assert!(o.status.success(), "{}", err(&o));
    // No token: the server's refusal, exit 2, with its reason.
    let o = write(&["--tls-ca", &ca], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("UNAUTHENTICATED") && err(&o).contains("CREDENTIALS_MISSING"),
        "{}",
        err(&o)
    );
    // A wrong key.
    let o = write(&["--tls-ca", &ca, "--token", "guess"], &[]);
    assert!(err(&o).contains("KEY_UNKNOWN"), "{}", err(&o));
    // https without a CA: refused locally, before anything is sent.
    let o = write(&["--token", "s3cret-key"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--tls-ca"), "{}", err(&o));
    // A CA that did not sign the server's certificate: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    make_server_certificate(other.path());
    let o = write(
        &[
            "--tls-ca",
            other.path().join("ca.crt").to_str().unwrap(),
            "--token",
            "s3cret-key",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    // Plaintext to the TLS port: nothing is answered.
    let o = dhow(
        &[
            "schema",
            "read",
            "--endpoint",
            &format!("http://{}", server.addr),
            "--token",
            "s3cret-key",
        ],
        &[],
    );
    assert!(!o.status.success());
    // --tls-ca with an http endpoint is a mistake the CLI names.
    let o = dhow(
        &[
            "schema",
            "read",
            "--endpoint",
            &format!("http://{}", server.addr),
            "--tls-ca",
            &ca,
        ],
        &[],
    );
    assert!(err(&o).contains("need an https:// endpoint"), "{}", err(&o));
}

#[test]
fn a_public_address_without_authentication_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(dhow_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--grpc-addr", "0.0.0.0:0"])
        .env_remove("DHOW_PRESHARED_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(
        e.contains("refusing to serve 0.0.0.0:0 without authentication"),
        "{e}"
    );
    assert!(
        e.contains("[auth]") && e.contains("--insecure-allow-unauthenticated-public-access"),
        "{e}"
    );
    // Nothing was written: the refusal comes before the store is opened.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}
