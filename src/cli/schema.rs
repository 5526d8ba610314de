//! `keyfleet schema --out DIR`: write the generated JSON schemas (one per kind plus the
//! `keyfleet.schema.json` bundle) and the operator API's OpenAPI document (`openapi.json`)
//! into DIR, creating it.
//!
//! Only generated files are written; nothing else in DIR is touched or removed.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{EXIT_OK, GlobalArgs};
use crate::policy::schema::write_schemas;

/// The long help of this subcommand.
pub const LONG_ABOUT: &str = "Write the JSON Schema (draft 2020-12) of every policy kind, generated \
from Keyfleet's own types, plus keyfleet.schema.json, a bundle that accepts any kind. Policy \
files point editors at the bundle with a `# yaml-language-server: $schema=...` comment. The \
checked-in schemas/ folder is made with `keyfleet schema --out schemas/`. Also writes \
openapi.json, the OpenAPI 3.1 document of the operator API (`keyfleet run --api`), which the API \
serves at /api/v1/openapi.json.";

/// Arguments of `keyfleet schema`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The folder to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs `keyfleet schema`.
pub fn run(_global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    for path in write_schemas(&args.out)? {
        println!("wrote {}", path.display());
    }
    // The operator API's OpenAPI 3.1 document, from its route table and types.
    let openapi = args.out.join("openapi.json");
    crate::api::write_openapi(&crate::api::routes::openapi(), &openapi)?;
    println!("wrote {}", openapi.display());
    Ok(ExitCode::from(EXIT_OK))
}
