//! `dhow rel create|touch|delete|read|import|export`: writing and reading relationships in
//! their text form, `resource:id#relation@subject:id[#relation][expiration:RFC3339]`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use dhow_proto::v1 as pb;
use pb::relationship_update::Operation;
use tokio_stream::StreamExt;

use dhow_client::{
    block_on, print_read_token, read_input, token_text, CliError, Conn, ConnArgs, ConsistencyArgs,
    Out,
};

use super::args::{relationship_arg, relationship_filter, relationship_pb, relationship_text};

#[derive(Subcommand)]
pub enum RelCommand {
    /// Create relationships, atomically; fails if any exists. Prints the token.
    Create {
        /// Relationships, e.g. `document:readme#viewer@user:alice` or
        /// `document:readme#viewer@user:bob[expiration:2030-01-01T00:00:00Z]`.
        #[arg(required = true, value_name = "RELATIONSHIP")]
        relationships: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Create or replace relationships, atomically. Prints the token.
    Touch {
        /// Relationships, e.g. `document:readme#viewer@user:alice`.
        #[arg(required = true, value_name = "RELATIONSHIP")]
        relationships: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete relationships, atomically (missing ones are ignored). Prints the token.
    Delete {
        /// Relationships, e.g. `document:readme#viewer@user:alice`.
        #[arg(required = true, value_name = "RELATIONSHIP")]
        relationships: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print the relationships that match a filter, one per line.
    Read {
        /// `type`, `type:id`, `type#relation` or `type:id#relation`.
        filter: String,
        /// Only relationships whose subject matches: `type`, `type:id`, `type:*`,
        /// `type:id#relation`, or `type:id#...` for plain objects only.
        #[arg(long, value_name = "SUBJECT")]
        subject: Option<String>,
        /// At most this many relationships (0 for all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[command(flatten)]
        consistency: ConsistencyArgs,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Load relationships from FILE (`-` for stdin), one per line (`//` comments and blank
    /// lines are skipped), streamed in batches. Prints the count (stderr) and the token.
    Import {
        /// The file of relationships.
        file: PathBuf,
        /// Relationships per batch.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        batch_size: u32,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print every relationship, one per line (the format `rel import` reads).
    Export {
        #[command(flatten)]
        consistency: ConsistencyArgs,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

pub fn run(cmd: RelCommand) -> Result<(), CliError> {
    match cmd {
        RelCommand::Create {
            relationships,
            conn,
        } => write(&relationships, Operation::Create, &conn),
        RelCommand::Touch {
            relationships,
            conn,
        } => write(&relationships, Operation::Touch, &conn),
        RelCommand::Delete {
            relationships,
            conn,
        } => write(&relationships, Operation::Delete, &conn),
        RelCommand::Read {
            filter,
            subject,
            limit,
            consistency,
            conn,
        } => read(&filter, subject.as_deref(), limit, &consistency, &conn),
        RelCommand::Import {
            file,
            batch_size,
            conn,
        } => import(&file, batch_size as usize, &conn),
        RelCommand::Export { consistency, conn } => export(&consistency, &conn),
    }
}

/// The updates of one write, parsed before anything is sent.
pub fn updates(args: &[String], op: Operation) -> Result<Vec<pb::RelationshipUpdate>, CliError> {
    args.iter()
        .map(|a| {
            let r = relationship_arg(a)?;
            Ok(pb::RelationshipUpdate {
                operation: op as i32,
                relationship: Some(relationship_pb(&r)?),
            })
        })
        .collect()
}

fn write(args: &[String], op: Operation, conn: &ConnArgs) -> Result<(), CliError> {
    let updates = updates(args, op)?;
    block_on(async {
        let c = Conn::connect(conn).await?;
        let resp = c
            .relationships()
            .write(pb::WriteRequest {
                updates,
                optional_preconditions: Vec::new(),
            })
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let mut out = Out::new();
        out.line(token_text(resp.written_at.as_ref()))?;
        out.flush()
    })?
}

fn read(
    filter: &str,
    subject: Option<&str>,
    limit: u32,
    consistency: &ConsistencyArgs,
    conn: &ConnArgs,
) -> Result<(), CliError> {
    let filter = relationship_filter(filter, subject)?;
    block_on(async {
        let c = Conn::connect(conn).await?;
        let mut stream = c
            .relationships()
            .read(pb::ReadRequest {
                consistency: consistency.to_proto(),
                filter: Some(filter),
                optional_limit: limit,
                optional_cursor: None,
            })
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let mut out = Out::new();
        let mut token = None;
        while let Some(resp) = stream.message().await.map_err(|s| c.err(s))? {
            if token.is_none() {
                token = resp.read_at;
            }
            out.line(relationship_text(resp.relationship.as_ref()))?;
        }
        out.flush()?;
        if token.is_some() {
            print_read_token(token.as_ref());
        }
        Ok(())
    })?
}

/// Parses an import file: one relationship per line; blank lines and `//` comments skipped.
/// Errors name the file and line.
pub fn parse_import(name: &str, text: &str) -> Result<Vec<pb::Relationship>, CliError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let r = relationship_arg(line)
            .and_then(|r| relationship_pb(&r))
            .map_err(|e| CliError::Local(format!("{name}:{}: {e}", i + 1)))?;
        out.push(r);
    }
    Ok(out)
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} relationships ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

fn import(file: &Path, batch_size: usize, conn: &ConnArgs) -> Result<(), CliError> {
    let text = read_input(file)?;
    let name = if file.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        file.display().to_string()
    };
    let rels = parse_import(&name, &text)?;
    let total = rels.len() as u64;
    let batches: Vec<pb::ImportRequest> = rels
        .chunks(batch_size)
        .map(|c| pb::ImportRequest {
            relationships: c.to_vec(),
        })
        .collect();
    drop(rels);
    block_on(async {
        let c = Conn::connect(conn).await?;
        let bar = progress_bar(total);
        let sent = bar.clone();
        let stream = tokio_stream::iter(batches).map(move |b| {
            sent.inc(b.relationships.len() as u64);
            b
        });
        let result = c.relationships().import(stream).await;
        bar.finish_and_clear();
        let resp = result.map_err(|s| c.err(s))?.into_inner();
        eprintln!("imported {} relationships", resp.loaded_count);
        let mut out = Out::new();
        out.line(token_text(resp.written_at.as_ref()))?;
        out.flush()
    })?
}

fn export(consistency: &ConsistencyArgs, conn: &ConnArgs) -> Result<(), CliError> {
    block_on(async {
        let c = Conn::connect(conn).await?;
        let mut stream = c
            .relationships()
            .export(pb::ExportRequest {
                consistency: consistency.to_proto(),
                optional_cursor: None,
            })
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let mut out = Out::new();
        let mut token = None;
        while let Some(resp) = stream.message().await.map_err(|s| c.err(s))? {
            if token.is_none() {
                token = resp.exported_at;
            }
            for r in &resp.relationships {
                out.line(relationship_text(Some(r)))?;
            }
        }
        out.flush()?;
        if token.is_some() {
            print_read_token(token.as_ref());
        }
        Ok(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_skips_comments_and_blank_lines() {
        let text = "// a comment\n\ndocument:1#viewer@user:a\n  document:2#viewer@group:g#member  \n// end\n";
        let rels = parse_import("f.txt", text).unwrap();
        assert_eq!(rels.len(), 2);
        assert_eq!(
            relationship_text(Some(&rels[1])),
            "document:2#viewer@group:g#member"
        );
    }

    #[test]
    fn import_errors_name_file_and_line() {
        let text = "document:1#viewer@user:a\n\ndocument:2#viewer\n";
        let e = parse_import("rels.txt", text).unwrap_err();
        let m = e.message();
        assert!(
            m.starts_with("rels.txt:3: invalid relationship `document:2#viewer`"),
            "{m}"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn updates_carry_the_operation() {
        let u = updates(&["document:1#viewer@user:a".to_string()], Operation::Delete).unwrap();
        assert_eq!(u[0].operation, Operation::Delete as i32);
        assert!(updates(&["nope".to_string()], Operation::Create).is_err());
    }
}
