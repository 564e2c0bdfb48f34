//! `detour man`: manual pages in roff, generated from the clap definitions:
//! `detour(1)` on stdout, or one page per verb (`detour-status.1`, ...)
//! written to a directory for packaging.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};

use super::Cli;

/// Print the manual page (or write one per command)
///
/// Examples:
///   detour man | man -l -
///   detour man --out /usr/local/share/man/man1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ManArgs {
    /// Write detour.1 and detour-<verb>.1 here instead of printing detour.1.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: &ManArgs) -> anyhow::Result<()> {
    let command = Cli::command();
    match &args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("cannot render the manual page")?;
            super::output::emit(&String::from_utf8_lossy(&page))?;
        }
        Some(dir) => write_pages(command, dir)?,
    }
    Ok(())
}

/// The page of `command` and of every visible subcommand, recursively,
/// named like git's: `detour-bpf-maps.1`.
fn write_pages(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pending = vec![(command.get_name().to_owned(), command)];
    while let Some((name, mut command)) = pending.pop() {
        command.build();
        for sub in command.get_subcommands() {
            if !sub.is_hide_set() && sub.get_name() != "help" {
                let sub_name = format!("{name}-{}", sub.get_name());
                pending.push((sub_name.clone(), sub.clone().name(sub_name)));
            }
        }
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .context("cannot render the manual page")?;
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
