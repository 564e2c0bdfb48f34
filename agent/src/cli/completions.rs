//! `detour completions SHELL`: shell completion scripts generated from the
//! clap definitions, so they always match the binary that prints them.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Print a shell completion script (bash, zsh, fish, ...)
///
/// Examples:
///   detour completions bash > /etc/bash_completion.d/detour
///   detour completions zsh > "${fpath[1]}/_detour"
///   detour completions fish > ~/.config/fish/completions/detour.fish
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "detour", &mut script);
    super::output::emit(&String::from_utf8_lossy(&script))?;
    Ok(())
}
