//! The classes of upstream failure and what each one means for routing: the one [`ErrorClass`]
//! of stilts, shared with the plugin ABI through the `stilts-class` leaf crate.

pub use stilts_class::ErrorClass;
