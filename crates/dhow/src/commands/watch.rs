//! `dhow watch`: prints relationship changes as they are committed, `TOUCH rel` or
//! `DELETE rel` one per line, then the token they are complete through (on stderr).

use clap::Args;
use dhow_proto::v1 as pb;

use dhow_client::{block_on, print_read_token, CliError, Conn, ConnArgs, Out};

use super::args::type_arg;
use super::format;

#[derive(Args)]
#[command(
    after_help = "After each batch of changes, `token: TOKEN` on stderr is the position \
to resume from with --from. Stops on Ctrl-C, after --count changes, or when the server ends \
the stream."
)]
pub struct WatchArgs {
    /// Start after this token (from a write, a read or an earlier watch); default: now.
    #[arg(long, value_name = "TOKEN")]
    pub from: Option<String>,
    /// Stop after this many changes.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Only changes to resources of this type (repeatable).
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub fn run(a: WatchArgs) -> Result<(), CliError> {
    let types = a
        .types
        .iter()
        .map(|t| type_arg(t))
        .collect::<Result<Vec<_>, _>>()?;
    let req = pb::WatchRequest {
        optional_object_types: types,
        optional_start_cursor: a.from.map(|token| pb::ConsistencyToken { token }),
    };
    if a.count == Some(0) {
        return Ok(());
    }
    block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let mut stream = c
            .relationships()
            .watch(req)
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut out = Out::new();
        let mut seen: u64 = 0;
        loop {
            let msg = tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                m = stream.message() => m,
            };
            let Some(resp) = msg.map_err(|s| c.err(s))? else {
                eprintln!("the server ended the watch");
                return Ok(());
            };
            if resp.changes.is_empty() {
                continue;
            }
            for (i, change) in resp.changes.iter().enumerate() {
                out.line(format::change(change))?;
                seen += 1;
                if a.count.is_some_and(|n| seen >= n) {
                    // The token would claim changes not printed: stop without it, unless
                    // this was the batch's last change.
                    out.flush()?;
                    if i + 1 == resp.changes.len() {
                        print_read_token(resp.changes_through.as_ref());
                    }
                    return Ok(());
                }
            }
            out.flush()?;
            print_read_token(resp.changes_through.as_ref());
        }
    })?
}
