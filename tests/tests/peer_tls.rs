//! The peer port for members only: a three-node cluster of real processes with mutual TLS
//! between its nodes (certificates made with the openssl commands of docs/operations.md),
//! and strangers that try to get in: a plaintext client, a TLS client without a
//! certificate, a certificate of another CA, a process of another CA trying to join, a
//! certificate of the cluster CA for a non-member, and a member's certificate claiming to be
//! another member. None gets a message in, and the cluster's data is unchanged.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dhow_proto::internal::v1::raft_service_client::RaftServiceClient;
use dhow_proto::internal::v1::{HelloRequest, SendRequest};
use dhow_tests::cluster::{at_least, Cluster, SCHEMA};
use dhow_tests::process::{dhow_bin, free_port};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tonic::transport::{Channel, Endpoint};

/// Makes `ca.crt`/`ca.key`, `node-1..=3` of that CA, `node-9` of that CA (not a member), and
/// `other-ca` with its own `node-2`, with the commands docs/operations.md gives.
fn make_certificates(dir: &Path) {
    let script = r#"
set -euo pipefail
ca() {  # ca NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout "$1.key" -out "$1.crt" -subj "/CN=$1" 2>/dev/null
}
node() {  # node CA NAME ID
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$2.key" -out "$2.csr" -subj "/CN=node-$3" 2>/dev/null
  openssl x509 -req -in "$2.csr" -CA "$1.crt" -CAkey "$1.key" -CAcreateserial -days 825 \
    -extfile <(printf "subjectAltName=DNS:node-$3\nextendedKeyUsage=serverAuth,clientAuth") \
    -out "$2.crt" 2>/dev/null
}
ca ca
for id in 1 2 3 9; do node ca "node-$id" "$id"; done
ca other-ca
node other-ca other-node-2 2
"#;
    let o = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("bash and openssl");
    assert!(
        o.status.success(),
        "making certificates failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn plaintext(addr: &str) -> RaftServiceClient<Channel> {
    RaftServiceClient::new(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy(),
    )
}

/// A client of the peer port over TLS, trusting `ca`, presenting `cert` (or nothing).
fn tls(addr: &str, dir: &Path, ca: &str, cert: Option<&str>) -> RaftServiceClient<Channel> {
    let config = match cert {
        Some(c) => dhow_tls::node_client_config(
            &dir.join(format!("{ca}.crt")),
            &dir.join(format!("{c}.crt")),
            &dir.join(format!("{c}.key")),
            None,
        ),
        None => dhow_tls::client_config(&dhow_tls::Trust::Ca(dir.join(format!("{ca}.crt"))), None),
    }
    .unwrap();
    RaftServiceClient::new(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(dhow_tls::TlsConnector::new(config)),
    )
}

/// A forged append from `from` to `to` at a high term, carrying an entry.
fn forged(from: u64, to: u64) -> Vec<u8> {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = from;
    m.to = to;
    m.term = 1_000;
    m.commit = 1_000;
    m.entries.push(raft::eraftpb::Entry {
        index: 1_000,
        term: 1_000,
        data: b"garbage".to_vec().into(),
        ..Default::default()
    });
    m.write_to_bytes().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_is_for_members_only() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let d = |f: &str| certs.path().join(f).display().to_string();
    let (ca, cert, key) = (d("ca.crt"), d("node-{id}.crt"), d("node-{id}.key"));
    let cluster = Cluster::start_with_env(
        3,
        &[
            ("DHOW_PEER_TLS_CA_FILE", &ca),
            ("DHOW_PEER_TLS_CERT_FILE", &cert),
            ("DHOW_PEER_TLS_KEY_FILE", &key),
        ],
    )
    .await;
    // The cluster works over mutual TLS: a write on the leader is seen on another node.
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let mut c = cluster.client(leader).await;
    c.write_schema(SCHEMA).await.unwrap();
    let t = c.set("document:secret", "alice", true).await.unwrap();
    let other = (leader + 1) % 3;
    let mut o = cluster.client(other).await;
    assert!(
        o.check("document:secret", "alice", at_least(&t))
            .await
            .unwrap()
            .0
    );
    let status = c.status().await.unwrap();
    let cluster_id = status.cluster_id;
    let before = c.export(at_least(&t)).await.unwrap();

    let dir = certs.path();
    for n in &cluster.nodes {
        let addr = n.peer_addr();
        // No TLS: the handshake never happens, no cluster id is told.
        assert!(plaintext(&addr).hello(HelloRequest {}).await.is_err());
        // TLS without a client certificate, and with another CA's certificate: refused.
        assert!(tls(&addr, dir, "ca", None)
            .hello(HelloRequest {})
            .await
            .is_err());
        assert!(tls(&addr, dir, "ca", Some("other-node-2"))
            .hello(HelloRequest {})
            .await
            .is_err());
        // The cluster CA's certificate of a non-member: connected, but its messages are
        // dropped (not a member), whatever they say.
        let mut stranger = tls(&addr, dir, "ca", Some("node-9"));
        let _ = stranger
            .send(SendRequest {
                cluster_id,
                from: 9,
                messages: vec![forged(9, n.id)],
            })
            .await;
        // A member's certificate claiming to be another member: refused at the door.
        let liar_id = if n.id == 1 { 2 } else { 1 };
        let claimed = if liar_id == 1 { 3 } else { 1 };
        let e = tls(&addr, dir, "ca", Some(&format!("node-{liar_id}")))
            .send(SendRequest {
                cluster_id,
                from: claimed,
                messages: vec![forged(claimed, n.id)],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    }

    // A process of another CA trying to join as node 4 cannot learn the cluster id, so it
    // never gets as far as serving.
    let data = tempfile::tempdir().unwrap();
    let own_peer = format!("127.0.0.1:{}", free_port());
    let out = data.path().join("out.txt");
    let mut rogue = Command::new(dhow_bin())
        .arg("serve")
        .args(["--node-id", "4", "--data-dir"])
        .arg(data.path().join("d"))
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--peer-addr", &own_peer])
        .args([
            "--initial-cluster",
            &format!("1={},4={own_peer}", cluster.nodes[0].peer_addr()),
        ])
        .args(["--initial-cluster-state", "existing"])
        .env("DHOW_PEER_TLS_CA_FILE", d("other-ca.crt"))
        .env("DHOW_PEER_TLS_CERT_FILE", d("other-node-2.crt"))
        .env("DHOW_PEER_TLS_KEY_FILE", d("other-node-2.key"))
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let printed = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        !printed.contains("listening on"),
        "the rogue node started: {printed}"
    );
    let _ = rogue.kill();
    let _ = rogue.wait();

    // Nothing changed: same members, same data, same answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let mut c = cluster.client(leader).await;
    let status = c.status().await.unwrap();
    assert_eq!(status.members.len(), 3, "{status:?}");
    let t2 = c.set("document:after", "bob", true).await.unwrap();
    let after = c.export(at_least(&t2)).await.unwrap();
    let mut expected = before.clone();
    expected.insert("document:after#viewer@user:bob".into(), ());
    assert_eq!(after, expected);
    assert!(
        o.check("document:secret", "alice", at_least(&t2))
            .await
            .unwrap()
            .0
    );
}
