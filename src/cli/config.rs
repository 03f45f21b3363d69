//! `vigil config defaults | schema`: every key of a pipeline file with its default, range and
//! meaning (the book's configuration reference is `--markdown`), or the file's JSON Schema.

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Every key with its default, range and meaning.
    Defaults {
        /// As the Markdown table in docs/src/reference/config.md.
        #[arg(long)]
        markdown: bool,
    },
    /// The JSON Schema of a pipeline file.
    Schema,
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::Defaults { markdown: true } => print!("{}", crate::config::docs::markdown()),
        Cmd::Defaults { markdown: false } => print!("{}", crate::config::docs::text_table()),
        Cmd::Schema => {
            println!("{}", serde_json::to_string_pretty(&schemars::schema_for!(crate::config::PipelineFile))?)
        }
    }
    Ok(ExitCode::SUCCESS)
}
