//! One module per subcommand.
pub mod analyze;
pub mod echo;
pub mod up;
pub mod validate;
