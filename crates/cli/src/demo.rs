//! `concord demo`: placeholder until the analytics demo lands.

use anyhow::Result;

/// Run the demo.
pub fn run() -> Result<()> {
    anyhow::bail!("demo not yet written")
}
