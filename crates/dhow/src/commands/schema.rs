//! `dhow schema write FILE` and `dhow schema read`.

use std::path::PathBuf;

use clap::Subcommand;
use dhow_proto::v1 as pb;

use dhow_client::{
    block_on, print_read_token, read_input, token_text, CliError, Conn, ConnArgs, ConsistencyArgs,
    Out,
};

#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Replace the schema with the one in FILE (`-` for stdin); prints the token.
    Write {
        /// The schema file, in SpiceDB's schema language.
        file: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print the schema.
    Read {
        #[command(flatten)]
        consistency: ConsistencyArgs,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

pub fn run(cmd: SchemaCommand) -> Result<(), CliError> {
    match cmd {
        SchemaCommand::Write { file, conn } => {
            let schema = read_input(&file)?;
            block_on(async {
                let c = Conn::connect(&conn).await?;
                let resp = c
                    .schema()
                    .write_schema(pb::WriteSchemaRequest { schema })
                    .await
                    .map_err(|s| c.err(s))?
                    .into_inner();
                let mut out = Out::new();
                out.line(token_text(resp.written_at.as_ref()))?;
                out.flush()
            })?
        }
        SchemaCommand::Read { consistency, conn } => block_on(async {
            let c = Conn::connect(&conn).await?;
            let resp = c
                .schema()
                .read_schema(pb::ReadSchemaRequest {
                    consistency: consistency.to_proto(),
                })
                .await
                .map_err(|s| c.err(s))?
                .into_inner();
            let mut out = Out::new();
            out.text(&resp.schema_text)?;
            if !resp.schema_text.is_empty() && !resp.schema_text.ends_with('\n') {
                out.text("\n")?;
            }
            out.flush()?;
            print_read_token(resp.read_at.as_ref());
            Ok(())
        })?,
    }
}
