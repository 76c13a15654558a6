//! The gateway's configuration file: the `stilts-config` crate, which the simulator reads too.

pub use stilts_config::*;
