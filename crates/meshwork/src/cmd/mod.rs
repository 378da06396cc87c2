//! One module per subcommand.
pub mod echo;
pub mod up;
pub mod validate;
