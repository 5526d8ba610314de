//! `keyfleet completions SHELL` and `keyfleet man`: shell completion scripts (clap_complete)
//! and man pages (clap_mangen) generated from the CLI definition itself, so they cannot drift
//! from what the binary accepts.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory;

use super::{Cli, EXIT_OK, GlobalArgs};

/// The shells completion scripts are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash (`source <(keyfleet completions bash)`).
    Bash,
    /// Z shell (write to a file named `_keyfleet` on `$fpath`).
    Zsh,
    /// fish (write to `~/.config/fish/completions/keyfleet.fish`).
    Fish,
}

/// Long help of `keyfleet completions`.
pub const COMPLETIONS_ABOUT: &str = "Print a shell completion script for keyfleet on stdout, \
generated from the command-line definition.\n\nbash: `source <(keyfleet completions bash)` (or \
save it under /usr/share/bash-completion/completions/keyfleet); zsh: save it as `_keyfleet` in a \
directory on $fpath; fish: save it as ~/.config/fish/completions/keyfleet.fish.";

/// Arguments of `keyfleet completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Long help of `keyfleet man`.
pub const MAN_ABOUT: &str = "Print the keyfleet(1) man page (roff) on stdout, generated from the \
command-line definition; with --dir, write keyfleet.1 and one keyfleet-SUBCOMMAND.1 page per \
subcommand into a directory instead (e.g. /usr/local/share/man/man1).";

/// Arguments of `keyfleet man`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {
    /// Write every page into this directory instead of printing keyfleet(1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Runs `keyfleet completions`.
pub fn run_completions(_global: &GlobalArgs, args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "keyfleet", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("cannot write to stdout")?;
    Ok(ExitCode::from(EXIT_OK))
}

fn render(cmd: clap::Command, title: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(title)
        .render(&mut out)
        .context("cannot render the man page")?;
    Ok(out)
}

fn write_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut pages = vec![("keyfleet".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("keyfleet-{}", sub.get_name());
        pages.push((name, sub.clone()));
    }
    let mut written = Vec::new();
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, render(page, &name)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Runs `keyfleet man`.
pub fn run_man(_global: &GlobalArgs, args: ManArgs) -> anyhow::Result<ExitCode> {
    match &args.dir {
        None => std::io::stdout()
            .write_all(&render(Cli::command(), "keyfleet")?)
            .context("cannot write to stdout")?,
        Some(dir) => {
            for p in write_pages(dir)? {
                println!("wrote {}", p.display());
            }
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_name_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_pages(dir.path()).unwrap();
        let main = std::fs::read_to_string(dir.path().join("keyfleet.1")).unwrap();
        assert!(main.contains(".TH keyfleet"), "{main}");
        for sub in Cli::command().get_subcommands() {
            let page = dir.path().join(format!("keyfleet-{}.1", sub.get_name()));
            assert!(written.contains(&page), "{}", page.display());
            // roff writes a hyphen as `\-`.
            let roff = sub.get_name().replace('-', "\\-");
            assert!(main.contains(&roff), "{roff}");
        }
    }
}
