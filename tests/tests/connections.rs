//! What a client can do to a node with connections alone, against the real binary: hold more
//! idle TCP connections than the node has file descriptors, and keep them silent. Before the
//! connection budget, the accept loop spun on EMFILE at a full core and no new client got in
//! while the idle connections stayed open forever; now the node stops accepting at its limit,
//! closes silent connections after `idle_timeout`, and keeps serving.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dhow_proto::v1::permission_service_client::PermissionServiceClient;
use dhow_proto::v1::relationship_service_client::RelationshipServiceClient;
use dhow_proto::v1::schema_service_client::SchemaServiceClient;
use dhow_tests::process::Server;

/// CPU time (user + system) the process has used, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_descriptor_limit_neither_spin_nor_lock_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    // 128 descriptors: the default budget is 64 connections. 200 idle sockets would exhaust
    // the descriptors without it.
    let server = Server::start_with_nofile(
        128,
        &dir.path().join("data"),
        0,
        &[],
        &[
            ("DHOW_IDLE_TIMEOUT", "3s"),
            ("DHOW_KEEPALIVE_INTERVAL", "1s"),
        ],
    );
    let endpoint = server.endpoint();
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    SchemaServiceClient::new(channel.clone())
        .write_schema(dhow_proto::v1::WriteSchemaRequest {
            schema: "definition user {}\ndefinition doc { relation viewer: user }".into(),
        })
        .await
        .expect("write schema");
    RelationshipServiceClient::new(channel.clone())
        .write(dhow_proto::v1::WriteRequest {
            updates: vec![dhow_proto::v1::RelationshipUpdate {
                operation: dhow_proto::v1::relationship_update::Operation::Touch as i32,
                relationship: Some(dhow_tests::rel("doc:a#viewer@user:ann")),
            }],
            ..Default::default()
        })
        .await
        .expect("write");

    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&server.addr).expect("connect (the kernel's backlog)"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // Held at its limit, the server must not spin: well under half a core over 2 s.
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 100,
        "the server used {used} ticks (of 200 in 2 s) while 200 idle connections waited: the accept loop spins"
    );

    // A new client gets in once the silent connections are closed (idle_timeout 3 s), and the
    // client that was already connected keeps working meanwhile.
    let started = Instant::now();
    let fresh = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(20));
    let check = |channel: tonic::transport::Channel| async move {
        PermissionServiceClient::new(channel)
            .check(dhow_proto::v1::CheckRequest {
                resource: Some(dhow_proto::v1::ObjectReference {
                    object_type: "doc".into(),
                    object_id: "a".into(),
                }),
                permission: "viewer".into(),
                subject: Some(dhow_proto::v1::SubjectReference {
                    object: Some(dhow_proto::v1::ObjectReference {
                        object_type: "user".into(),
                        object_id: "ann".into(),
                    }),
                    optional_relation: String::new(),
                }),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().permissionship)
    };
    let old = check(channel.clone())
        .await
        .expect("the connected client's check");
    assert_eq!(
        old,
        dhow_proto::v1::Permissionship::HasPermission as i32,
        "check answer"
    );
    let new_channel = fresh.connect().await.expect("a new client connects");
    let new = check(new_channel).await.expect("the new client's check");
    assert_eq!(new, dhow_proto::v1::Permissionship::HasPermission as i32);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a new client waited {:?}",
        started.elapsed()
    );

    // Every silent socket was closed by the server (end of stream or reset).
    let deadline = Instant::now() + Duration::from_secs(20);
    for mut s in idle {
        s.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        ))
        .unwrap();
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(_) => continue, // the server's HTTP/2 preface, then the close
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("an idle connection was still open after 20 s: {e}"),
            }
        }
    }

    // The connection that kept talking (answering pings) was not cut off: still one channel.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let again = check(channel)
        .await
        .expect("the first client's check, later");
    assert_eq!(again, dhow_proto::v1::Permissionship::HasPermission as i32);
}
